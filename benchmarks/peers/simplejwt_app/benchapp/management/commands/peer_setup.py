"""Create the benchmark user and pre-generate single-use refresh tokens.

Each refresh token is created with ``RefreshToken.for_user(user)``, exactly
what TokenObtainPairSerializer.get_token() does on a real login, so every
token is also registered as an ``OutstandingToken`` row.
"""
import json
import sys

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken


class Command(BaseCommand):
    help = "Create bench user; write N fresh refresh tokens (one per line)."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="bench")
        parser.add_argument("--password", default="bench-password")
        parser.add_argument("--refresh-tokens", type=int, default=0)
        parser.add_argument("--out", default=None)
        parser.add_argument("--access-token-out", default=None)
        parser.add_argument("--batch", type=int, default=1000)

    def handle(self, *args, **opts):
        User = get_user_model()
        user, created = User.objects.get_or_create(username=opts["username"])
        if created:
            user.set_password(opts["password"])
            user.save()
        n = opts["refresh_tokens"]
        before = OutstandingToken.objects.filter(user=user).count()
        if n and opts["out"]:
            with open(opts["out"], "w") as fh:
                done = 0
                while done < n:
                    k = min(opts["batch"], n - done)
                    lines = []
                    with transaction.atomic():
                        for _ in range(k):
                            lines.append(str(RefreshToken.for_user(user)))
                    fh.write("\n".join(lines) + "\n")
                    done += k
        if opts["access_token_out"]:
            with open(opts["access_token_out"], "w") as fh:
                fh.write(str(RefreshToken.for_user(user).access_token) + "\n")
        after = OutstandingToken.objects.filter(user=user).count()
        json.dump(
            {"user_id": user.pk, "outstanding_before": before, "outstanding_after": after},
            sys.stdout,
        )
        sys.stdout.write("\n")
