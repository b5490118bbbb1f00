(class_definition name: (_) @name) @def
(object_definition name: (_) @name) @def
(trait_definition name: (_) @name) @def
(enum_definition name: (_) @name) @def
(function_definition name: (_) @name) @def
(function_declaration name: (_) @name) @def
(given_definition name: (_) @name) @def
