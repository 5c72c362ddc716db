"""What a shop team looks at: the report page and its PNGs (``report``) and the recommendation network
(``graph``), both drawn from the chat's own ranking; the figures themselves are in ``core.figures``."""
