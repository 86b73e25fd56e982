"""``dinotrack studio``: a local web app to prompt, track, look at and correct a video.

:mod:`dinotrack.studio.server` is the HTTP layer over :class:`dinotrack.InteractiveSession`;
:mod:`dinotrack.studio.cli` the sub-command; ``static/`` the page.
"""
