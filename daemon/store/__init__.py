"""The database: tables, engines, migrations and the writes of one statement change."""
