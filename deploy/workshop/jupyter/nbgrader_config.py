"""nbgrader settings every account on the hub shares (found through JUPYTER_CONFIG_PATH)."""

import os

c = get_config()  # noqa: F821
c.Exchange.root = os.environ.get("COURSE_EXCHANGE", "/srv/nbgrader/exchange")
c.CourseDirectory.course_id = "mech-interp-course"
