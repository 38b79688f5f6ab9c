"""GeoPackage pieces QGIS reads: coded field domains and stored default styles.

Written with ``sqlite3`` into a GeoPackage that pyogrio has created, laid out as GDAL and
QGIS write them, so that QGIS (3.22+) opens the layer styled, with drop-downs of the
allowed values. The QML documents themselves are built by :mod:`agrimon.products.styles`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path


def add_enum_constraint(
    db: sqlite3.Connection,
    table: str,
    column: str,
    name: str,
    values: Sequence[str],
    description: str = "Allowed values",
) -> None:
    """Record the allowed values of a column with the GeoPackage Schema extension.

    The tables and rows are those GDAL writes for a coded field domain, so GDAL (3.3+)
    reads them back as the field domain `name` of `column`.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS gpkg_data_columns (table_name TEXT NOT NULL,"
        "column_name TEXT NOT NULL,name TEXT UNIQUE,title TEXT,description TEXT,"
        "mime_type TEXT,constraint_name TEXT,"
        "CONSTRAINT pk_gdc PRIMARY KEY (table_name, column_name),"
        "CONSTRAINT gdc_tn UNIQUE (table_name, name))"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS gpkg_data_column_constraints (constraint_name TEXT NOT NULL,"
        "constraint_type TEXT NOT NULL,value TEXT,min NUMERIC,min_is_inclusive BOOLEAN,"
        "max NUMERIC,max_is_inclusive BOOLEAN,description TEXT,"
        "CONSTRAINT gdcc_ntv UNIQUE (constraint_name, constraint_type, value))"
    )
    db.execute(
        "CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT,column_name TEXT,"
        "extension_name TEXT NOT NULL,definition TEXT NOT NULL,scope TEXT NOT NULL,"
        "CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))"
    )
    for schema_table in ("gpkg_data_columns", "gpkg_data_column_constraints"):
        db.execute(
            "INSERT OR IGNORE INTO gpkg_extensions VALUES (?, NULL, 'gpkg_schema', "
            "'http://www.geopackage.org/spec121/#extension_schema', 'read-write')",
            (schema_table,),
        )
    db.execute(
        "INSERT INTO gpkg_data_columns (table_name, column_name, constraint_name) VALUES (?, ?, ?)",
        (table, column, name),
    )
    rows: list[tuple[str, str, str | None]] = [(f"_{name}_domain_description", "", description)]
    rows += [(name, value, None) for value in values]
    db.executemany(
        "INSERT INTO gpkg_data_column_constraints (constraint_name, constraint_type, value, "
        "description) VALUES (?, 'enum', ?, ?)",
        rows,
    )


def add_styles(db: sqlite3.Connection, styles: Sequence[tuple[str, str, str, str, str]]) -> None:
    """Store default QGIS styles in the ``layer_styles`` table, laid out as QGIS makes it.

    Args:
        db: The open GeoPackage.
        styles: ``(table, geometry column, style name, QML, SLD)`` per layer.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS layer_styles (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        "f_table_catalog TEXT(256),f_table_schema TEXT(256),f_table_name TEXT(256),"
        "f_geometry_column TEXT(256),styleName TEXT(30),styleQML TEXT,styleSLD TEXT,"
        "useAsDefault BOOLEAN,description TEXT,owner TEXT(30),ui TEXT(30),"
        "update_time DATETIME DEFAULT CURRENT_TIMESTAMP)"
    )
    # Registered as an attribute table, like QGIS (through GDAL) does.
    db.execute(
        "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, "
        "last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', '', "
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
    )
    has_ogr_contents = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'gpkg_ogr_contents'"
    ).fetchone()
    for table, geometry_column, name, qml, sld in styles:
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, ?, 1, ?, '', NULL, "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (table, geometry_column, name, qml, sld, f"agrimon: {name}"),
        )
    if has_ogr_contents:
        db.execute(
            "INSERT OR REPLACE INTO gpkg_ogr_contents (table_name, feature_count) "
            "VALUES ('layer_styles', (SELECT count(*) FROM layer_styles))"
        )


def link_into_place(tmp: Path, out: Path) -> None:
    """Give the finished ``tmp`` the name ``out``, never replacing an existing ``out``.

    A hard link is atomic and fails when ``out`` appeared meanwhile; on a file system
    without hard links (FAT, some network shares) it falls back to a rename.

    Raises:
        FileExistsError: ``out`` exists.
    """
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(out):
            raise FileExistsError(out) from None
        os.replace(tmp, out)
