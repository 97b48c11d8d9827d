"""The steps every run shares: setup, the stage plan, measurement, the stage cache.

`compress run` (`compress.runner`), the distributed worker and `compress tune`'s
trials call these same functions, so the three cannot drift apart.
"""
