; A component's top-level blocks; a <script> block's text (@inject) is parsed in the
; language its `lang` attribute names (JavaScript without one) for the definitions inside.
(document (script_element (start_tag (tag_name) @name) (raw_text) @inject) @def)
(document (style_element (start_tag (tag_name) @name)) @def)
(document (element (start_tag (tag_name) @name)) @def)
