(call target: (identifier) @_kw (#any-of? @_kw "defmodule" "defprotocol" "defimpl")
  (arguments (alias) @name)) @def
(call target: (identifier) @_kw
  (#any-of? @_kw "def" "defp" "defmacro" "defmacrop" "defguard" "defdelegate")
  (arguments [(identifier) @name (call target: (identifier) @name)
              (binary_operator left: (call target: (identifier) @name))])) @def
