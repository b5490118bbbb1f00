(module name: (_) @name) @def
(class name: (_) @name) @def
(singleton_class value: (_) @name) @def
(method name: (_) @name) @def
(singleton_method name: (_) @name) @def
