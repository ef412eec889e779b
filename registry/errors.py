"""Typed registry errors; callers catch these, never database driver exceptions.

RegistryError
├── RegistryConfigError     settings the registry cannot use (e.g. a malformed database URL)
├── RegistryUnavailable     the database cannot be reached, or a lock wait timed out
├── SchemaNotCurrent        the database has not been migrated to this code's schema
├── NotFound
│   ├── ModelNotFound
│   ├── VersionNotFound
│   └── AliasNotSet
├── InvalidInput            a bad name, weight, alias, timestamp or page cursor
├── InvalidState            an action the version's or alias's state forbids
└── ManifestError           a manifest.json that is missing, unreadable or inconsistent
"""

from __future__ import annotations


class RegistryError(Exception):
    """Base class: every error the registry raises on purpose."""

    code = "registry_error"


class RegistryConfigError(RegistryError):
    code = "registry_config"


class RegistryUnavailable(RegistryError):
    code = "registry_unavailable"


class SchemaNotCurrent(RegistryError):
    code = "registry_schema_not_current"


class NotFound(RegistryError):
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotSet(NotFound):
    code = "alias_not_set"


class InvalidInput(RegistryError):
    code = "invalid_input"


class InvalidState(RegistryError):
    code = "invalid_state"


class ManifestError(RegistryError):
    code = "manifest_error"
