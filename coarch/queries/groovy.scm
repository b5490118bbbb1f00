(class_declaration name: (identifier) @name) @def
(interface_declaration name: (identifier) @name) @def
(enum_declaration name: (identifier) @name) @def
(method_declaration name: (identifier) @name) @def
(function_definition name: (identifier) @name) @def
