"""Settings of the real sources: endpoints, credentials, cache and retry behaviour."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agrimon.cache import DEFAULT_CACHE_DIR, Cache
from agrimon.retry import RetryPolicy

StacPreset = Literal["earth-search", "planetary-computer", "cdse"]
ShPreset = Literal["cdse", "sentinel-hub"]
Level = Literal["l2a", "l1c"]


class SourceSettings(BaseModel):
    """How sources reach their services. Secrets are ``SecretStr``: masked in repr and JSON.

    Attributes:
        level: Processing level: ``l2a`` (surface reflectance with SCL, the default) or
            ``l1c`` (top-of-atmosphere reflectance, no SCL).
        stac_preset: Which public STAC API (and its asset naming) to use.
        stac_url: Any STAC API URL; overrides the preset's URL (asset naming stays).
        max_cloud: Largest scene cloud cover accepted, percent.
        local_path: Folder of GeoTIFFs or a static STAC catalog for the ``local`` source.
        sh_preset: Sentinel Hub deployment: the free Copernicus Data Space or commercial.
        sh_base_url: Sentinel Hub base URL (overrides the preset).
        sh_token_url: OAuth2 token URL (overrides the preset).
        sh_client_id: OAuth client id (else ``SH_CLIENT_ID``, else the sentinelhub profile).
        sh_client_secret: OAuth client secret (else ``SH_CLIENT_SECRET``, else the profile).
        offline: Serve every remote response from the cache; a miss is an error.
        cache_dir: Cache folder.
        no_cache: Neither read nor write the cache.
        retries: Attempts per remote call.
        timeout_s: Seconds to wait for a reply (to connect, or between bytes of a reply)
            before the attempt counts as failed and is retried.
        backoff_s: First wait between attempts (doubles each time).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    level: Level = "l2a"
    stac_preset: StacPreset = "earth-search"
    stac_url: str | None = None
    max_cloud: float = Field(default=80.0, ge=0, le=100)
    local_path: Path | None = None
    sh_preset: ShPreset = "cdse"
    sh_base_url: str | None = None
    sh_token_url: str | None = None
    sh_client_id: str | None = None
    sh_client_secret: SecretStr | None = None
    offline: bool = False
    cache_dir: Path = DEFAULT_CACHE_DIR
    no_cache: bool = False
    retries: int = Field(default=4, ge=1, le=20)
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    backoff_s: float = Field(default=1.0, ge=0)

    def cache(self) -> Cache:
        """The response cache these settings describe."""
        return Cache(self.cache_dir, offline=self.offline, enabled=not self.no_cache)

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(attempts=self.retries, backoff_s=self.backoff_s)
