(function_declaration name: (identifier) @name) @def
; A method's name is qualified by its receiver's type (@recv): `Server.Start`.
(method_declaration receiver: (parameter_list (parameter_declaration
  type: [(type_identifier) @recv (pointer_type (type_identifier) @recv)
         (generic_type type: (type_identifier) @recv)
         (pointer_type (generic_type type: (type_identifier) @recv))]))
  name: (field_identifier) @name) @def
(method_declaration name: (field_identifier) @name) @def
(type_declaration (type_spec name: (type_identifier) @name)) @def
