; `function M.send()` and `function M:close()` are named as written.
(function_declaration name: (_) @name) @def
(assignment_statement (variable_list name: (_) @name)
  (expression_list value: (function_definition))) @def
