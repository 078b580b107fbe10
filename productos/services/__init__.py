"""Services built on the productos library. Each imports only the library's public modules, as any user's
service does; the library imports none of them."""
