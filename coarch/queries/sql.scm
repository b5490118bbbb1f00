; A CREATE statement is named by what it creates.
(statement [(create_table (object_reference) @name) (create_view (object_reference) @name)
  (create_materialized_view (object_reference) @name) (create_index column: (_) @name)
  (create_function (object_reference) @name) (create_type (object_reference) @name)
  (create_schema (identifier) @name) (create_trigger (object_reference) @name)
  (create_sequence (object_reference) @name) (alter_table (object_reference) @name)]) @def
(statement (create_index (object_reference) @name)) @def
