"""Rights on collections: an owner, readers and editors per collection, and a public flag.

- ``admin`` users: every right on every collection.
- The owner and editors of a collection read it and upload or delete its documents; the owner (or an admin)
  deletes it; admins and editors create collections (the creator becomes the owner).
- Readers read the collections granted to them and public ones (readable by every signed-in user).
- A user whose role is ``reader`` only ever reads, even where they own a collection or hold an editor grant
  (made before a demotion): rights are capped by the role, at once.
- A collection with no record at all is readable and editable by admins only.
"""
from __future__ import annotations

import re

from sqlalchemy import delete, insert, or_, select, update

from . import models as m
from .errors import AccessDenied, StateError
from .users import User

GRANTS = ("reader", "editor")
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_collection(name) -> str:
    if not isinstance(name, str) or not _COLLECTION_RE.fullmatch(name) or name.endswith("."):
        raise StateError(f"Invalid collection name {repr(name)[:80]}: use 1-64 letters, digits, '_', '-' or '.', "
                         "starting with a letter or digit.")
    return name


def _current(c, user: User) -> User | None:
    """``user`` as the database has it now (None when removed)."""
    row = c.execute(select(m.users.c.role).where(m.users.c.id == user.id)).first()
    return None if row is None else User(user.id, user.name, row.role)


def _cap(user: User, right: str | None) -> str | None:
    if right in ("owner", "editor") and not user.is_editor:
        return "reader"
    return right


class RightsMixin:
    def access(self, user, collection) -> str | None:
        """The user's right on ``collection``: "admin", "owner", "editor", "reader" or None. The role is read from
        the database, so a role changed (or a user removed) a moment ago counts even for an old :class:`User`."""
        if user is None:
            return None
        with self._tx() as c:
            user = _current(c, user)
            if user is None:
                return None
            if user.is_admin:
                return "admin"
            if not isinstance(collection, str) or not _COLLECTION_RE.fullmatch(collection):
                return None
            rec = c.execute(select(m.collections).where(m.collections.c.name == collection)).first()
            if rec is None:
                return None
            if rec.owner_id == user.id:
                return _cap(user, "owner")
            g = c.execute(select(m.grants.c.right).where(m.grants.c.collection == collection,
                                                         m.grants.c.user_id == user.id)).first()
        if g is not None:
            return _cap(user, g.right)
        return "reader" if rec.public else None

    def can_read(self, user, collection) -> bool:
        return self.access(user, collection) is not None

    def can_edit(self, user, collection) -> bool:
        return self.access(user, collection) in ("admin", "owner", "editor")

    def can_delete_collection(self, user, collection) -> bool:
        return self.access(user, collection) in ("admin", "owner")

    def can_create(self, user) -> bool:
        if user is None:
            return False
        with self._tx() as c:
            user = _current(c, user)
        return user is not None and user.is_editor

    def require_read(self, user, collection) -> None:
        if not self.can_read(user, collection):
            raise AccessDenied(_denied(user, collection, "read"))

    def require_edit(self, user, collection) -> None:
        if not self.can_edit(user, collection):
            raise AccessDenied(_denied(user, collection, "change"))

    def require_delete_collection(self, user, collection) -> None:
        if not self.can_delete_collection(user, collection):
            raise AccessDenied(_denied(user, collection, "delete", "Only its owner or an admin may delete it"))

    def require_create(self, user) -> None:
        if not self.can_create(user):
            who = "You are not signed in" if user is None else f"{user.name!r} is a {user.role}"
            raise AccessDenied(f"{who}: only editors and admins create collections; ask an admin to make you an "
                               "editor, or to create it and give you the editor right.")

    def require_admin(self, user) -> None:
        current = None
        if user is not None:
            with self._tx() as c:
                current = _current(c, user)
        if current is None or not current.is_admin:
            who = ("You are not signed in" if user is None else f"There is no user {user.name!r} any more"
                   if current is None else f"{current.name!r} is a {current.role}")
            raise AccessDenied(f"{who}: this needs an admin; ask one of your admins.")

    def readable(self, user, names) -> list[str]:
        """The names in ``names`` that ``user`` may read, in their order."""
        names = list(names)
        if user is None:
            return []
        with self._tx() as c:
            user = _current(c, user)
            if user is None:
                return []
            if user.is_admin:
                return names
            ok = {r.name for r in c.execute(select(m.collections.c.name).where(
                or_(m.collections.c.public.is_(True), m.collections.c.owner_id == user.id)))}
            ok |= {r.collection for r in c.execute(select(m.grants.c.collection).where(m.grants.c.user_id == user.id))}
        return [n for n in names if n in ok]

    # -- changing rights -------------------------------------------------------------------------------------
    def _ensure_record(self, c, collection: str) -> None:
        if c.execute(select(m.collections.c.name).where(m.collections.c.name == collection)).first() is None:
            c.execute(insert(m.collections).values(name=collection, owner_id=None, public=False,
                                                   created_at=self.clock()))

    def grant(self, collection, user_name, as_="reader") -> None:
        """Give ``user_name`` the reader or editor right on ``collection`` (replacing a right they had)."""
        validate_collection(collection)
        if as_ not in GRANTS:
            raise StateError(f"Unknown right {str(as_)[:40]!r}: use reader or editor.")
        user = self.require_user(user_name)
        if as_ == "editor" and not user.is_editor:
            raise StateError(f"{user.name!r} is a reader and cannot edit collections: make them an editor first "
                             f"(`hybrid-rag users set-role {user.name} editor`), or grant --as reader.")
        with self._tx(write=True) as c:
            self._ensure_record(c, collection)
            c.execute(delete(m.grants).where(m.grants.c.collection == collection, m.grants.c.user_id == user.id))
            c.execute(insert(m.grants).values(collection=collection, user_id=user.id, right=as_,
                                              granted_at=self.clock()))

    def revoke(self, collection, user_name) -> bool:
        """Take away ``user_name``'s grant on ``collection``; False when they had none (ownership stays: see
        :meth:`set_owner`)."""
        validate_collection(collection)
        user = self.require_user(user_name)
        with self._tx(write=True) as c:
            n = c.execute(delete(m.grants).where(m.grants.c.collection == collection,
                                                 m.grants.c.user_id == user.id)).rowcount
        return bool(n)

    def set_owner(self, collection, user) -> None:
        """Make ``user`` (a :class:`User`, a name, or None for nobody) the owner of ``collection``."""
        validate_collection(collection)
        if user is not None and not isinstance(user, User):
            user = self.require_user(user)
        with self._tx(write=True) as c:
            self._ensure_record(c, collection)
            c.execute(update(m.collections).where(m.collections.c.name == collection).values(
                owner_id=None if user is None else user.id))

    def set_public(self, collection, public: bool) -> None:
        """Public: readable by every signed-in user."""
        validate_collection(collection)
        with self._tx(write=True) as c:
            self._ensure_record(c, collection)
            c.execute(update(m.collections).where(m.collections.c.name == collection).values(public=bool(public)))

    def collection_rights(self, collection) -> dict:
        """``{"owner": name | None, "public": bool, "readers": [...], "editors": [...]}`` (names sorted)."""
        validate_collection(collection)
        with self._tx() as c:
            rec = c.execute(select(m.collections.c.public, m.users.c.name)
                            .select_from(m.collections.outerjoin(m.users, m.users.c.id == m.collections.c.owner_id))
                            .where(m.collections.c.name == collection)).first()
            rows = c.execute(select(m.users.c.name, m.grants.c.right)
                             .join(m.users, m.users.c.id == m.grants.c.user_id)
                             .where(m.grants.c.collection == collection).order_by(m.users.c.name_key)).all()
        return {"owner": rec.name if rec is not None else None, "public": bool(rec.public) if rec is not None else False,
                "readers": [r.name for r in rows if r.right == "reader"],
                "editors": [r.name for r in rows if r.right == "editor"]}

    def forget_collection(self, collection) -> None:
        """Drop every right on a deleted collection (a new one of the same name starts with none)."""
        if not isinstance(collection, str):
            return
        with self._tx(write=True) as c:
            c.execute(delete(m.grants).where(m.grants.c.collection == collection))
            c.execute(delete(m.collections).where(m.collections.c.name == collection))


def _denied(user, collection, verb: str, extra: str = "") -> str:
    if user is None:
        return f"You are not signed in: sign in to {verb} collection {str(collection)[:64]!r}."
    rule = f" {extra}." if extra else ""
    return (f"{user.name!r} may not {verb} collection {str(collection)[:64]!r}.{rule} Ask its owner or an admin "
            f"for the right (`hybrid-rag collections grant {str(collection)[:64]} {user.name} --as "
            f"{'reader' if verb == 'read' else 'editor'}`).")


__all__ = ["RightsMixin", "GRANTS", "validate_collection"]
