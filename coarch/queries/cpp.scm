(function_definition) @def
(class_specifier name: (_) @name body: (_)) @def
(struct_specifier name: (_) @name body: (_)) @def
(union_specifier name: (_) @name body: (_)) @def
(enum_specifier name: (_) @name body: (_)) @def
(namespace_definition name: (_) @name) @def
(type_definition type: [(struct_specifier body: (_)) (class_specifier body: (_))
  (enum_specifier body: (_))] declarator: (type_identifier) @name) @def
