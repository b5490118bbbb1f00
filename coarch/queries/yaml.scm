; Every top-level key, and below them the keys that hold a mapping of their own.
(stream (document (block_node (block_mapping (block_mapping_pair key: (_) @name) @def))))
(block_mapping_pair key: (_) @name value: (block_node (block_mapping))) @def
