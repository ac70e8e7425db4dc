"""Pipeline stages: one module or package per step of the chain, each with its model code beside it."""
