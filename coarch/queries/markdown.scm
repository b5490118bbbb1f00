; A section runs from its heading to the next heading of the same or a higher level.
(section (atx_heading heading_content: (_) @name)) @def
(section (setext_heading heading_content: (_) @name)) @def
