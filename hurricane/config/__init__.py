"""What Hurricane is told: the option table of serve and consume, its resolver and
the typed results (:mod:`.options`), and what a log may show of a secret
(:mod:`.masking`). It imports nothing else of Hurricane; every other part may import it."""
