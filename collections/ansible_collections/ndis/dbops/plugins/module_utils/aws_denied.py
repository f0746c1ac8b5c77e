# -*- coding: utf-8 -*-
# Copyright: contributors to ndis.dbops
# Apache-2.0 (the collection licence, see galaxy.yml)
"""The error codes with which AWS refuses a call to credentials whose policy lacks its action.

One home for them: the modules that tolerate some AWS errors let these through (a refusal is a gap in the
job's IAM policy, never an answer), and the ndis.dbops.aws_denied callback explains them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

ACCESS_DENIED = ["AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                 "UnauthorizedAccess"]
