(document (pair (_) @name) @def)
(table (_) @name) @def
(table_array_element (_) @name) @def
