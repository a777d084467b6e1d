"""Design registry and the built-in designs (3+3, BOIN, CRM, TITE-CRM, TITE-BOIN)."""
