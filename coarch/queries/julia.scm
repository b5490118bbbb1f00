(module_definition name: (_) @name) @def
(struct_definition (type_head) @name) @def
(abstract_definition (type_head) @name) @def
(function_definition (signature (call_expression . (_) @name))) @def
(macro_definition (signature (call_expression . (_) @name))) @def
