; Definitions of Python: each pattern captures a definition as @def and its name as @name.
(function_definition name: (identifier) @name) @def
(class_definition name: (identifier) @name) @def
