"""Scale-out across hosts under faults: see bench/cluster/__main__.py."""
