; Every top-level key, and below them the keys that hold an object of their own.
(document (object (pair key: (string (string_content) @name)) @def))
(pair key: (string (string_content) @name) value: (object)) @def
