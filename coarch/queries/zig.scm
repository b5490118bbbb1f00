(function_declaration name: (identifier) @name) @def
(variable_declaration (identifier) @name
  [(struct_declaration) (enum_declaration) (union_declaration)]) @def
(test_declaration (string (string_content) @name)) @def
