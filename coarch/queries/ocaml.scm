(value_definition (let_binding pattern: (_) @name)) @def
(type_definition (type_binding name: (_) @name)) @def
(module_definition (module_binding (module_name) @name)) @def
(module_type_definition (module_type_name) @name) @def
(class_definition (class_binding (class_name) @name)) @def
