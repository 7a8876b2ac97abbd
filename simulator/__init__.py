"""asyncfl fleet simulator: virtual-time FL over heterogeneous device fleets."""

__all__: list[str] = []
