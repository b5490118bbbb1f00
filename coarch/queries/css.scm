(stylesheet (rule_set (selectors) @name) @def)
(media_statement . (_) @name) @def
(keyframes_statement (keyframes_name) @name) @def
(supports_statement . (_) @name) @def
