(function_declaration name: (identifier) @name) @def
(generator_function_declaration name: (identifier) @name) @def
(class_declaration name: (identifier) @name) @def
(method_definition name: (_) @name) @def
(lexical_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression) (class)])) @def
(variable_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression) (class)])) @def
(expression_statement (assignment_expression left: (member_expression
  property: (property_identifier) @name) right: [(arrow_function) (function_expression)])) @def
