(data_type name: (_) @name) @def
(newtype name: (_) @name) @def
(type_synonym name: (_) @name) @def
(class name: (_) @name) @def
(instance name: (_) @name) @def
(function name: (_) @name) @def
(bind name: (_) @name) @def
(signature name: (_) @name) @def
