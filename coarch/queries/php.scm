(namespace_definition name: (_) @name body: (_)) @def
(class_declaration name: (name) @name) @def
(interface_declaration name: (name) @name) @def
(trait_declaration name: (name) @name) @def
(enum_declaration name: (name) @name) @def
(function_definition name: (name) @name) @def
(method_declaration name: (name) @name) @def
