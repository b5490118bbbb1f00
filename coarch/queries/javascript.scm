; Definitions of JavaScript (TypeScript and TSX inherit them): each pattern captures a definition
; as @def and its name as @name (@recv, when captured, qualifies it: `Foo.bar`). An earlier
; pattern wins when two name the same node.
(function_declaration name: (identifier) @name) @def
(generator_function_declaration name: (identifier) @name) @def
(class_declaration name: (identifier) @name) @def
(method_definition name: (_) @name) @def
(lexical_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression) (class)])) @def
(variable_declaration (variable_declarator name: (identifier) @name
  value: [(arrow_function) (function_expression) (class)])) @def
; `Foo.prototype.bar = function` is the method `Foo.bar`.
(expression_statement (assignment_expression left: (member_expression
  object: (member_expression object: (identifier) @recv
    property: (property_identifier) @_proto (#eq? @_proto "prototype"))
  property: (property_identifier) @name) right: [(arrow_function) (function_expression)])) @def
; `module.exports = function name() {}`: the function's own name, not `exports`.
(expression_statement (assignment_expression left: (member_expression)
  right: (function_expression name: (identifier) @name))) @def
; `exports.foo = function`, `this.foo = () =>`, `obj.foo = function`.
(expression_statement (assignment_expression left: (member_expression
  property: (property_identifier) @name) right: [(arrow_function) (function_expression)])) @def
; Object-literal methods written as properties: `{ foo: function () {}, 'bar': () => {} }`.
(pair key: [(property_identifier) (string)] @name
  value: [(arrow_function) (function_expression)]) @def
; Class fields holding a function: `handleClick = () => {}`.
(field_definition property: [(property_identifier) (private_property_identifier)] @name
  value: [(arrow_function) (function_expression)]) @def
; A module's own values: `var baseEach = createBaseEach(baseForOwn)`, `export const routes = [...]`
; (top level only; a `require(...)` is an import, not a definition).
(program (lexical_declaration (variable_declarator name: (identifier) @name value: (_) @_value
  (#not-match? @_value "^require\\s*\\("))) @def)
(program (variable_declaration (variable_declarator name: (identifier) @name value: (_) @_value
  (#not-match? @_value "^require\\s*\\("))) @def)
(program (export_statement declaration: (lexical_declaration (variable_declarator
  name: (identifier) @name value: (_) @_value (#not-match? @_value "^require\\s*\\("))) @def))
