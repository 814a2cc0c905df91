"""Example personas created on the very first start, so the demo has someone to personalize for at once.

All texts were written for this project (no data set was copied). The six voices differ on purpose in
topic, register, sentence length and punctuation, so the effect of the persona plug is easy to see.
Each item has a title and a date, like a LaMP profile entry, so headline/title tasks work on them too.
The journals below are plain text so they stay readable: one entry per blank-line-separated block, whose
first line is "DATE | TITLE" and whose remaining lines are the text (joined with spaces).
"""

from __future__ import annotations

from collections.abc import Iterable

from persona_demo.data.ingest import HistoryItem, ParsedPersona
from persona_demo.data.store import PersonaStore, PersonaSummary

SEED_SOURCE = "seed"


def _journal(text: str) -> list[HistoryItem]:
    """Parse the "DATE | TITLE" + text blocks below into items."""
    items = []
    for block in text.strip().split("\n\n"):
        head, *body = block.strip().splitlines()
        date, title = (part.strip() for part in head.split("|", 1))
        items.append(HistoryItem(text=" ".join(line.strip() for line in body), title=title, date=date))
    return items


def _persona(name: str, about: str, journal: str) -> ParsedPersona:
    return ParsedPersona(name=name, items=_journal(journal), source=SEED_SOURCE, meta={"about": about})


_MARGUERITE = """
2024-03-02 | The hellebores do not mind the frost
The hellebores (Helleborus orientalis) have opened beneath the plum tree, frost or no frost. Their
petals are really sepals, which is why they last so long; I counted forty-one flowers this morning, six
more than last year.

2024-03-19 | On the patience of seeds
Sowed the wild columbine seed I collected in October. It wants a cold spell before it wakes, so the
trays go outside under a sheet of glass. Germination may take six weeks. A gardener's chief tool is a
calendar.

2024-04-07 | A visitor in the borage
A tawny mining bee (Andrena fulva) worked the borage for most of the afternoon. The females nest in bare
soil, so I have left the edge of the path unweeded for them. Tidiness is overrated.

2024-04-28 | Why the moss stays
My neighbour asked how to rid the lawn of moss. I told her, kindly, that the moss is the lawn telling
her about shade and damp clay. One may argue with a lawn, but never win.

2024-05-15 | Measuring the oak
Measured the girth of the old pedunculate oak at chest height: 3.62 metres. By the usual rule of thumb
that puts it near two hundred and forty years. It was a sapling when the canal was dug.

2024-06-09 | Foxgloves, handled with respect
The foxgloves (Digitalis purpurea) are taller than I am this year. Every part of the plant is poisonous,
and every part of it is beautiful; the two facts are older than any of us.

2024-07-21 | Pressing flowers, properly
For pressing, pick on a dry morning after the dew has gone, lay the flowers between sheets of blotting
paper, and change the paper daily for the first week. Colour is kept by speed, not by weight.

2024-09-03 | The quiet work of lichens
Seven kinds of lichen on the north wall, by my count. Lichens are partnerships of a fungus and an alga,
and they grow perhaps a millimetre a year. Nothing in the garden is more patient, and nothing is more
ignored.

2024-10-26 | Saving seed for next spring
Envelopes labelled and dated: columbine, honesty, love-in-a-mist, and the small yellow tomato that came
up by itself beside the compost. The volunteers are always the hardiest.

2024-12-14 | Winter reading
Rereading my 1987 field notebook from the Pyrenees. My handwriting was smaller then and my certainty
larger. Half the identifications have since been revised by the taxonomists.
"""

_DEX = """
2024-01-12 | NEW PB LET'S GOOO
NEW PB!!! 23:41.08 in any% and I still choked the ice level lol. Chat was going absolutely feral when
the clip landed first try. We are SO back.

2024-01-30 | the frame-perfect jump is fake
ok so the wall clip everybody talks about is a 1-frame window. ONE frame. That's 16.7 ms for anyone who
isn't a nerd. I hit it 3 times out of 50 tonight. Grinding it tomorrow.

2024-02-18 | Routing stream recap
Spent 4 hours routing the new skip with chat. Saves maybe 2 seconds if you don't die, costs 40 if you
do. Is it worth it? Absolutely not. Are we doing it? Obviously.

2024-03-05 | hot take: controller > keyboard
hot take but I'm right: d-pad on the old controller is just better for this game. Keyboard players stay
mad. (love you keyboard players, pls don't unfollow)

2024-03-27 | RNG hates me specifically
Boss did the slow pattern FIVE TIMES IN A ROW. That's like a 1 in 240 chance. I'm convinced the game
reads my heart rate and picks whatever ruins the run.

2024-04-14 | Charity marathon this weekend
Running my category at the charity marathon Saturday, 8pm UTC! No resets allowed so expect chaos. Every
sub goes to the children's hospital. Bring snacks and good vibes.

2024-05-02 | Why I reset so much
People ask why I reset after one bad jump. The first 3 minutes decide the whole run. If the opening is
slow the rest of the run literally can't be a PB. Math is math.

2024-06-11 | Setup tour finally
Setup tour: CRT from a garage sale, capture card older than some of chat, and a chair that squeaks every
time I lean into a jump. Perfection. Not changing a thing.

2024-07-08 | WORLD RECORD???
Two tenths off world record. TWO TENTHS. My hands are still shaking. Gonna touch grass for like an hour
and then we grind again. gg everyone, you're the best chat on the site.
"""

_CAPTAIN = """
2023-11-03 | Departure Rotterdam
0600 cast off, Rotterdam. 1,840 containers aboard, draught 11.2 m. Wind SW 5, visibility good. Pilot
disembarked 0712. Crew in good order. Coffee machine not.

2023-11-05 | Biscay, as expected
Bay of Biscay. Swell 4 m from the west, rolling heavily. Two lashings re-tightened on bay 14. Galley
secured; soup cancelled by order of the master. Morale holding.

2023-11-09 | Man overboard drill
Man-overboard drill 1000. Dummy 'Oscar' recovered in 7 minutes 40 seconds; target under 8. Fast rescue
boat engine started second pull. Noted: new cadet kept her head. Good.

2023-11-14 | Suez transit
Suez southbound, convoy position 19. Canal speed 8 knots. 34 degrees in the shade, of which there is
none. Searchlight returned to the agent in working order.

2023-11-20 | Engine trouble, resolved
Main engine slowed 0230: fuel filter blocked. Chief engineer changed it in 50 minutes. Lost 9 nautical
miles. Chief now claims the ship is jealous of his day off.

2023-11-27 | Crossing the line
Crossed the equator 1415. Line ceremony for two first-timers; Neptune played by the bosun, badly. Fire
hoses used responsibly. Everyone dried off by dinner.

2023-12-02 | Fog off the cape
Dense fog off the cape from 0400, visibility under 200 m. Sound signals every two minutes, extra lookout
on the bridge wing. Speed reduced to 10 knots. Radar earned its keep.

2023-12-08 | Arrival Durban
Arrived Durban 1630, alongside 1815. Passage 35 days, no injuries, no cargo damage. Shore leave granted
by watch. Master going ashore for a haircut and a newspaper.

2023-12-19 | Christmas at sea
Christmas dinner served at sea, 12 knots, flat calm. Cook produced a turkey from nowhere. Nineteen
nationalities at one table and one argument about football. Normal.

2024-01-06 | On writing logs
A log is for the next master, not for posterity. Write what happened, when, and what you did. Leave the
poetry to the passengers, of whom we carry none.
"""

_PRIYA = """
2024-02-03 | Laminating in a warm kitchen
Croissant day, and the kitchen was 26 degrees by eight. Butter and dough have to stay the same firmness,
around 14 degrees, or the layers smear. Three folds, thirty minutes in the fridge between each, and no
shortcuts.

2024-02-21 | Cardamom buns, at last
Finally happy with the cardamom buns: freshly ground pods, never the pre-ground dust, and a brown-butter
sugar filling. The whole street smells like a hug at 7 am.

2024-03-10 | Weigh everything
Please, please weigh your flour. A cup can be 120 grams or 160 depending on how you scoop, and that is
the difference between a tender cake and a brick.

2024-03-29 | Mistakes worth keeping
Burnt the caramel for the third time this week, so I added flaky salt and a splash of cream and called
it bitter caramel. It sold out by noon. Happy accidents pay the rent.

2024-04-17 | The sourdough starter named Gus
Gus, my starter, is eleven years old and eats 100 grams of rye flour a day. He has outlived two ovens
and one business partner. He is the real head baker.

2024-05-06 | Strawberry season
First local strawberries. Macerated with a little sugar and black pepper, spooned over vanilla sponge,
finished with cold cream. Nothing else needed, and nothing else allowed.

2024-06-01 | Why my tarts rest
Tart dough rests overnight, not for tradition but for the gluten to relax and the flour to hydrate
evenly. Rested dough doesn't shrink in the tin. Impatience shrinks.

2024-08-12 | Teaching Saturday class
Saturday class: eight beginners, eight trays of choux. Six puffed beautifully, two stayed flat because
someone opened the oven door to look. We have all been that someone.

2024-10-20 | Autumn menu notes
Autumn menu: pear and ginger galette, chai custard tart, apple cider doughnuts on weekends only. The
brown butter goes into everything now. I regret nothing.

2024-12-01 | Holiday orders are open
Holiday orders open today. Stollen needs two weeks to mature, so order early; I'll wrap each loaf in
paper and string and a little note about who baked it.
"""

_TOMASZ = """
2024-01-08 | The latte is not the problem
Your daily coffee costs about 1,100 a year. Your car payment costs 6,000. Cut the thing with the extra
zero first, then we can talk about the coffee.

2024-01-25 | Fees compound too
A fund charging 1.5% a year instead of 0.2% quietly eats about a quarter of your savings over thirty
years. Compound interest works for whoever collects it. Check who that is.

2024-02-14 | A budget is a forecast
A budget is not a moral document. It is a forecast, and like every forecast it will be wrong. The point
is to be less wrong next month.

2024-03-03 | Emergency fund math
Three months of expenses in a boring savings account. Not invested, not clever, not exciting. Its only
job is to exist on the day the boiler dies, which it will.

2024-03-22 | On get-rich-quick courses
If someone sells a course on getting rich, check how they got rich. Usually it was by selling the
course. That is a business model, not an investment strategy.

2024-04-30 | My spreadsheet, revealed
People asked for my budget spreadsheet. It has four columns: date, amount, category, regret. The fourth
column is optional but informative.

2024-06-18 | Renting is not throwing money away
Renting is not throwing money away; interest, insurance and maintenance are also money you never see
again. Run the numbers for your city before you let a slogan decide.

2024-08-05 | Inflation, briefly
Inflation at 4% halves your cash's buying power in about 18 years. Cash under the mattress is safe from
burglars and defenceless against arithmetic.

2024-09-27 | Subscriptions audit
Did my yearly subscription audit: found three streaming services, a meditation app and a cloud plan for
a phone I sold in 2021. 312 a year saved. I am calm now. Without the app.

2024-11-11 | Black Friday, annotated
A 40% discount on something you did not plan to buy is a 60% expense. The cheapest purchase is still the
one you don't make.
"""

_JUNIPER = """
2024-09-04 | Day one: what is a question?
First day of class! I asked my students what makes a good question. Best answer: 'one you can check.'
That, friends, is the whole of science in five words!

2024-09-17 | The egg drop challenge
Egg drop day! Teams had ten straws, a metre of tape and one raw egg. Seven eggs survived a three-metre
fall. The winning design used crumple zones, just like a real car!

2024-10-01 | Why is the sky blue?
Someone asked why the sky is blue, so we shone a torch through milky water. From the side it looked
bluish, from the end orange, like a sunset! Small particles scatter blue light more.

2024-10-22 | Growing crystals
Our salt and sugar crystals are growing on strings by the window. Prediction time: which grows faster
and why? Write it down BEFORE you look. Scientists don't change guesses later!

2024-11-08 | Density towers
Built density towers with honey, dish soap, water and oil. Then we dropped in a grape, a cherry tomato
and a paperclip. The gasps when the grape floated halfway were everything.

2024-12-03 | Mistakes are data
A student was upset that his experiment 'failed'. I told him nothing failed: he learned that his idea
was wrong, which is a result! We wrote it up like any other finding.

2025-01-15 | Counting birds
We joined a bird count from the classroom window: 14 sparrows, 3 magpies and one very confident pigeon.
Real scientists will use our numbers. The class is thrilled!

2025-02-10 | Build a model heart
Made model hearts from jars, balloons and straws to see how valves make blood flow one way. Messy, loud
and wonderful. Please don't ask about the red food colouring on the ceiling.

2025-03-20 | Spring equinox shadows
Measured the shadow of a metre stick at noon on the equinox. From its length we estimated our latitude
within two degrees. With a stick! Eratosthenes would be proud of us.
"""

SEED_PERSONAS: tuple[ParsedPersona, ...] = (
    _persona(
        "Marguerite, retired botanist",
        "Gentle, exact, fond of Latin names and slow observation; writes a garden journal.",
        _MARGUERITE,
    ),
    _persona(
        "Dex, speedrun streamer",
        "Loud, fast, full of gamer slang and frame counts; streams retro platformer speedruns.",
        _DEX,
    ),
    _persona(
        "Captain Ines, cargo ship master",
        "Terse, factual logbook style; weather, crew, cargo and the sea, with dry humour.",
        _CAPTAIN,
    ),
    _persona(
        "Priya, pastry chef",
        "Warm and sensory, precise about grams and temperatures; runs a small bakery.",
        _PRIYA,
    ),
    _persona(
        "Tomasz, frugal finance blogger",
        "Dry, skeptical, numbers-first personal finance writing with deadpan jokes.",
        _TOMASZ,
    ),
    _persona(
        "Ms. Juniper, science teacher",
        "Enthusiastic middle-school science teacher; explains with questions and exclamations.",
        _JUNIPER,
    ),
)


def ensure_seed_personas(store: PersonaStore) -> int:
    """Create the example personas on a first start (an empty, never-seeded store); returns how many.

    Deleted examples do not come back: the store remembers that it was seeded once.
    """
    return store.seed_once(list(SEED_PERSONAS))


def first_visit_persona(personas: Iterable[PersonaSummary]) -> int | None:
    """The persona a new page opens with, so one click on Generate shows something: the first example
    persona still in the store, else the first persona with texts, else None (nothing to personalize)."""
    with_texts = [p for p in personas if p.item_count]
    by_name = {p.name: p.id for p in with_texts}
    for seed in SEED_PERSONAS:
        if seed.name in by_name:
            return by_name[seed.name]
    return with_texts[0].id if with_texts else None
