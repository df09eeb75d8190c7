import json
import sys

from django.core.management.base import BaseCommand
from rest_framework_simplejwt.token_blacklist.models import (
    BlacklistedToken,
    OutstandingToken,
)


class Command(BaseCommand):
    help = "Print OutstandingToken / BlacklistedToken row counts as JSON."

    def handle(self, *args, **opts):
        json.dump(
            {
                "outstanding": OutstandingToken.objects.count(),
                "blacklisted": BlacklistedToken.objects.count(),
            },
            sys.stdout,
        )
        sys.stdout.write("\n")
