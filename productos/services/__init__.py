"""Service layer: async use cases on the domain ports."""

from productos.services.productos import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Page, ProductService

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "Page", "ProductService"]
