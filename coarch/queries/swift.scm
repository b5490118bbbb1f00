; class_declaration also stands for struct, enum, extension and actor declarations.
(class_declaration name: (_) @name) @def
(protocol_declaration name: (_) @name) @def
(function_declaration name: (_) @name) @def
(protocol_function_declaration name: (_) @name) @def
(init_declaration) @def
(typealias_declaration name: (_) @name) @def
