; A block is named by its type and labels: `resource aws_instance web`.
(block (identifier) @name (string_lit)* @name) @def
