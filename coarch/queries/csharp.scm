(namespace_declaration name: (_) @name) @def
(file_scoped_namespace_declaration name: (_) @name) @def
(class_declaration name: (identifier) @name) @def
(struct_declaration name: (identifier) @name) @def
(interface_declaration name: (identifier) @name) @def
(enum_declaration name: (identifier) @name) @def
(record_declaration name: (identifier) @name) @def
(delegate_declaration name: (identifier) @name) @def
(method_declaration name: (identifier) @name) @def
(constructor_declaration name: (identifier) @name) @def
(destructor_declaration name: (identifier) @name) @def
(operator_declaration) @def
(property_declaration name: (identifier) @name) @def
(event_declaration name: (identifier) @name) @def
