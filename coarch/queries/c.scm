; A function_definition without @name is named by following its declarators.
(function_definition) @def
(struct_specifier name: (type_identifier) @name body: (_)) @def
(union_specifier name: (type_identifier) @name body: (_)) @def
(enum_specifier name: (type_identifier) @name body: (_)) @def
(type_definition type: [(struct_specifier body: (_)) (union_specifier body: (_))
  (enum_specifier body: (_))] declarator: (type_identifier) @name) @def
; Macros are definitions too: `#define LZ4_HASHLOG 12`, `#define MIN(a, b) ...`.
(preproc_def name: (identifier) @name) @def
(preproc_function_def name: (identifier) @name) @def
