(class_declaration name: (_) @name) @def
(object_declaration name: (_) @name) @def
(companion_object name: (_)? @name) @def
(function_declaration name: (_) @name) @def
(secondary_constructor) @def
(type_alias type: (_) @name) @def
