; inherits: javascript
(interface_declaration name: (type_identifier) @name) @def
(type_alias_declaration name: (type_identifier) @name) @def
(enum_declaration name: (identifier) @name) @def
(abstract_class_declaration name: (type_identifier) @name) @def
(class_declaration name: (type_identifier) @name) @def
(internal_module name: (_) @name) @def
(function_signature name: (identifier) @name) @def
(abstract_method_signature name: (_) @name) @def
(public_field_definition name: [(property_identifier) (private_property_identifier)] @name
  value: [(arrow_function) (function_expression)]) @def
