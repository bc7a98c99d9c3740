"""What people see: bay lights, the status page, Home Assistant discovery (SPEC 12)."""
