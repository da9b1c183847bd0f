"""The shop the synthetic cases come from: items per category with their usual USD price ranges,
rough exchange rates, and the day counts on each side of every window and warranty edge. Shared by
the recipe generator (:mod:`policies.synth`, which uses the price ranges) and the independent one
(:mod:`policies.synth_independent`, which uses the item names only)."""

from __future__ import annotations

# Days over-sampled: each side of every window and warranty edge.
BOUNDARY_DAYS: tuple[int, ...] = (13, 14, 15, 16, 29, 30, 31, 44, 45, 46, 59, 60, 61,
                                  364, 365, 366, 729, 730, 731)

# Rough exchange rates from USD, for realistic local prices.
FX: dict[str, float] = {"US": 1.0, "CA": 1.36, "UK": 0.79, "EU": 0.92, "AU": 1.52}
# (item, lowest USD price, highest USD price) per category.
ITEMS: dict[str, tuple[tuple[str, int, int], ...]] = {
    "electronics": (("Wireless headphones", 40, 380), ("Laptop", 500, 2400), ("Smartphone", 250, 1400),
                    ("Smartwatch", 120, 800), ("Tablet", 200, 1200), ("4K TV", 300, 2600),
                    ("Mirrorless camera", 450, 2200), ("Bluetooth speaker", 30, 420),
                    ("Mechanical keyboard", 40, 220), ("Gaming monitor", 150, 950), ("E-reader", 90, 260),
                    ("Game console", 300, 650), ("Wireless earbuds", 30, 280), ("Drone", 300, 1600)),
    "home": (("Blender", 40, 450), ("Robot vacuum", 150, 1100), ("Espresso machine", 90, 1500),
             ("Sofa", 450, 2600), ("Mattress", 300, 2200), ("Duvet set", 40, 260), ("Floor lamp", 30, 240),
             ("Cookware set", 80, 700), ("Air purifier", 100, 850), ("Office chair", 120, 1300),
             ("Stand mixer", 200, 750), ("Rug", 60, 900)),
    "apparel": (("Rain jacket", 50, 420), ("Running shoes", 50, 260), ("Summer dress", 30, 380),
                ("Jeans", 30, 220), ("Wool coat", 120, 1100), ("Leather boots", 80, 600),
                ("Cashmere sweater", 90, 520), ("Leather handbag", 80, 1600), ("Suit", 200, 1400),
                ("Hoodie", 25, 120)),
    "beauty": (("Face serum", 15, 180), ("Perfume", 30, 380), ("Hair dryer", 40, 560),
               ("Skincare set", 30, 320), ("Lipstick set", 10, 70), ("Electric toothbrush", 30, 320),
               ("Hair straightener", 30, 480), ("Hair styler kit", 200, 700)),
    "grocery": (("Coffee beans", 10, 60), ("Olive oil tin", 12, 70), ("Tea sampler", 10, 90),
                ("Protein powder", 20, 95), ("Chocolate hamper", 20, 250), ("Wine case", 60, 900),
                ("Spice set", 15, 80)),
    "digital": (("E-book bundle", 5, 60), ("Photo editing licence", 20, 700), ("Game download", 10, 90),
                ("Music subscription", 10, 200), ("Online course", 20, 1100), ("Gift card code", 10, 600),
                ("Antivirus licence", 20, 150)),
}

# Rule chains a split is balanced over: each deciding rule, plus LIM-1 after every rule that can refund.
BASE_RULES: tuple[str, ...] = (
    "GEN-1", "FRD-1", "FRD-2", "FRD-3", "CAN-1", "CAN-2", "CAN-3", "NRC-1", "NRC-2", "NRC-3",
    "WAR-1", "WAR-2", "WAR-3", "WAR-4", "WAR-5", "WAR-6",
    "RET-1", "RET-2", "RET-3", "RET-4", "RET-5", "RET-6", "RET-7", "RET-8", "RET-9", "RET-10",
    "RET-11", "RET-12",
)
REFUND_RULES: tuple[str, ...] = ("NRC-3", "RET-3", "RET-8", "RET-11", "RET-12")
TARGETS: tuple[str, ...] = BASE_RULES + tuple(f"{r}+LIM-1" for r in REFUND_RULES)
