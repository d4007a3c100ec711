"""crossguard serving runtime. Kept free of heavy imports so `import service.vlm` stays light."""
