(rule (targets) @name) @def
(define_directive name: (_) @name) @def
