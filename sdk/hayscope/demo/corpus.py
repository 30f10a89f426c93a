"""The demo's corpus: short notes on the seven wonders of the ancient world, and questions about them."""

from __future__ import annotations

from typing import Final

# (wonder, text): the wonder goes into each document's meta, so a retrieved document says what it is about.
DOCUMENTS: Final[tuple[tuple[str, str], ...]] = (
    ("Great Pyramid of Giza", "The Great Pyramid of Giza was built for the pharaoh Khufu of Egypt's Fourth Dynasty, around 2560 BC."),
    ("Great Pyramid of Giza", "The Great Pyramid stands on the Giza plateau, on the west bank of the Nile near modern Cairo."),
    ("Great Pyramid of Giza", "For almost four thousand years the Great Pyramid was the tallest structure made by people, at about 146 metres."),
    ("Great Pyramid of Giza", "Egyptians built the pyramid as a tomb: it was meant to protect the king's body and help his passage to the afterlife."),
    ("Great Pyramid of Giza", "The pyramid is the oldest of the seven wonders and the only one that still stands today."),
    ("Hanging Gardens of Babylon", "The Hanging Gardens of Babylon are said to have stood in the city of Babylon, near present-day Hillah in Iraq."),
    ("Hanging Gardens of Babylon", "Ancient writers describe the Hanging Gardens as stepped terraces planted with trees, shrubs and vines."),
    ("Hanging Gardens of Babylon", "Tradition says King Nebuchadnezzar II built the gardens for his wife Amytis, who missed the green hills of her homeland."),
    ("Hanging Gardens of Babylon", "Water for the Hanging Gardens would have been lifted from the Euphrates by screws or chains of buckets."),
    ("Hanging Gardens of Babylon", "No trace of the Hanging Gardens has been found in Babylon; some historians think they were really at Nineveh."),
    ("Temple of Artemis at Ephesus", "The Temple of Artemis stood at Ephesus, a Greek city on the coast of what is now western Turkey."),
    ("Temple of Artemis at Ephesus", "The temple was dedicated to the goddess Artemis and was rebuilt more than once after floods and fire."),
    ("Temple of Artemis at Ephesus", "In 356 BC a man named Herostratus burned the Temple of Artemis to make his name remembered."),
    ("Temple of Artemis at Ephesus", "The rebuilt Temple of Artemis had more than a hundred marble columns, each about eighteen metres tall."),
    ("Temple of Artemis at Ephesus", "Today only a single reassembled column marks the place where the Temple of Artemis once stood."),
    ("Statue of Zeus at Olympia", "The Statue of Zeus at Olympia was made by the Greek sculptor Phidias around 435 BC."),
    ("Statue of Zeus at Olympia", "The statue showed Zeus seated on a throne and was about twelve metres tall."),
    ("Statue of Zeus at Olympia", "Phidias built the Statue of Zeus from ivory plates for the skin and gold panels for the robe, over a wooden frame."),
    ("Statue of Zeus at Olympia", "The Statue of Zeus sat in the temple of Zeus at Olympia, the sanctuary where the Olympic Games were held."),
    ("Statue of Zeus at Olympia", "The Statue of Zeus was lost in the fifth century AD, probably in a fire after it was taken to Constantinople."),
    ("Mausoleum at Halicarnassus", "The Mausoleum at Halicarnassus was the tomb of Mausolus, a satrap of the Persian Empire, finished around 350 BC."),
    ("Mausoleum at Halicarnassus", "Artemisia, the sister and wife of Mausolus, had the tomb built after his death."),
    ("Mausoleum at Halicarnassus", "The Mausoleum stood at Halicarnassus, the modern town of Bodrum on the south-west coast of Turkey."),
    ("Mausoleum at Halicarnassus", "Four Greek sculptors each decorated one side of the Mausoleum with reliefs and statues."),
    ("Mausoleum at Halicarnassus", "Earthquakes ruined the Mausoleum, and the word mausoleum now means any grand tomb."),
    ("Colossus of Rhodes", "The Colossus of Rhodes was a bronze statue of the sun god Helios on the Greek island of Rhodes."),
    ("Colossus of Rhodes", "The people of Rhodes built the Colossus to celebrate their victory over a siege in 304 BC."),
    ("Colossus of Rhodes", "The Colossus was about 33 metres tall, roughly the height of the Statue of Liberty from heel to head."),
    ("Colossus of Rhodes", "The Colossus stood for only fifty-four years before an earthquake in 226 BC broke it at the knees."),
    ("Colossus of Rhodes", "The statue most likely stood beside the harbour of Rhodes, not with its legs across the entrance as later pictures show."),
    ("Lighthouse of Alexandria", "The Lighthouse of Alexandria stood on the island of Pharos at the harbour of Alexandria in Egypt."),
    ("Lighthouse of Alexandria", "The Lighthouse was built under Ptolemy I and Ptolemy II and finished around 280 BC."),
    ("Lighthouse of Alexandria", "At about 100 metres, the Lighthouse of Alexandria was among the tallest buildings of the ancient world."),
    ("Lighthouse of Alexandria", "A fire burned at the top of the Lighthouse at night, and a mirror reflected sunlight by day to guide ships."),
    ("Lighthouse of Alexandria", "Earthquakes in the fourteenth century destroyed the Lighthouse; its stones were later used to build a fort."),
)

QUESTIONS: Final[tuple[str, ...]] = (
    "Where is Gardens of Babylon?",
    "Why did people build Great Pyramid of Giza?",
    "What does Rhodes Statue look like?",
    "Who made the Statue of Zeus at Olympia?",
    "What was the Statue of Zeus made of?",
    "Whose tomb was the Mausoleum at Halicarnassus?",
    "Who burned the Temple of Artemis?",
    "How tall was the Lighthouse of Alexandria?",
    "How did the Lighthouse of Alexandria guide ships?",
    "How was water brought to the Hanging Gardens?",
    "Which of the seven wonders still stands?",
    "What destroyed the Colossus of Rhodes?",
    "Where did the Mausoleum stand?",
    "Why did the people of Rhodes build the Colossus?",
    "How many columns did the Temple of Artemis have?",
    "What happened to the Statue of Zeus?",
)
