"""Speaking to Gthulhu: one writer class per flavor behind one interface
(`writer.ApiWriter`), listed in `registry.FLAVORS`.

`http` (JSON over HTTP within one deadline), `answers` (one total decoder per
answer shape), `auth` (tokens), the flavors `v0` (the 2025 API, with
`merge`), `decision_maker` and `manager`, and `detect` (api.flavor = "auto").
"""
