"""The built-in retrieval set of the export gate: 30 queries and 200 short documents.

Written for this package (no dataset is shipped, nothing is read from disk): 40 everyday and encyclopedic
topics of 5 one- or two-sentence documents each, and one query for each of the first 30 topics. The gate
ranks all 200 documents for every query by dot product, once with the reference's vectors and once with a
graph's, and compares the rankings (`spladerunner_export.parity.retrieval_agreement`). Neighbouring topics
share words (tea and coffee, rivers and glaciers, bread and pasta) so that rankings have close calls.
"""

from __future__ import annotations

_TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("how do bees make honey", (
        "Honeybees collect nectar from flowers and store it in a second stomach on the flight back to the hive.",
        "Worker bees pass the nectar from mouth to mouth, adding enzymes that break sucrose into simpler sugars.",
        "Bees fan their wings over the honeycomb until enough water evaporates and the nectar thickens into honey.",
        "A single colony can produce more than twenty kilograms of surplus honey in a good summer.",
        "Beekeepers wear veils and use smoke to calm the bees before lifting the frames out of a hive.",
    )),
    ("why is the sky blue", (
        "Sunlight is scattered by the molecules of the air, and short blue wavelengths scatter the most.",
        "At sunset light crosses more atmosphere, so the blue is scattered away and the sky turns red and orange.",
        "On the Moon there is no air to scatter light, so the sky looks black even during the day.",
        "Clouds look white because their water droplets scatter all colours of light about equally.",
        "The colour of the sea partly reflects the sky and partly comes from water absorbing red light.",
    )),
    ("how to bake sourdough bread", (
        "A sourdough starter is a mixture of flour and water kept alive with wild yeast and lactic acid bacteria.",
        "The dough rises slowly overnight, which gives sourdough bread its open crumb and tangy flavour.",
        "Bakers score the loaf with a sharp blade so that it can expand evenly in the hot oven.",
        "Baking the bread inside a covered cast iron pot traps steam and produces a crisp, dark crust.",
        "Whole wheat flour absorbs more water than white flour, so the dough needs extra hydration.",
    )),
    ("what causes earthquakes", (
        "Earthquakes happen when stress builds up along a fault and the rocks suddenly slip past each other.",
        "Most earthquakes occur at the boundaries of tectonic plates, such as the ring of fire around the Pacific.",
        "The magnitude scale is logarithmic: each whole number means about thirty times more energy released.",
        "Seismometers record the waves of an earthquake, and the delay between them locates the epicentre.",
        "An earthquake under the ocean floor can displace water and send a tsunami across the sea.",
    )),
    ("benefits of drinking green tea", (
        "Green tea is made from leaves that are steamed or pan fired soon after picking to stop oxidation.",
        "Black tea leaves are rolled and left to oxidise, which darkens them and changes their flavour.",
        "A cup of green tea contains less caffeine than a cup of coffee but more than most herbal infusions.",
        "Water just below boiling keeps green tea from tasting bitter; steep it for two or three minutes.",
        "Matcha is green tea ground into a fine powder and whisked into hot water rather than steeped.",
    )),
    ("how to brew coffee at home", (
        "A French press steeps coarse coffee grounds in hot water for four minutes before a mesh filter is pressed.",
        "Espresso forces hot water through finely ground coffee at high pressure in under thirty seconds.",
        "Coffee beans are the roasted seeds of a cherry that grows on shrubs in tropical highlands.",
        "Freshly ground beans keep more aroma, so many people grind their coffee just before brewing.",
        "Cold brew coffee is made by soaking grounds in cold water for twelve hours or more.",
    )),
    ("who built the pyramids of giza", (
        "The Great Pyramid of Giza was built for the pharaoh Khufu around four and a half thousand years ago.",
        "Workers' villages near the pyramids show that the builders were paid labourers, not slaves.",
        "Limestone blocks were cut in nearby quarries and moved on sledges over wetted sand.",
        "The Sphinx has the body of a lion and the head of a king, carved from a single outcrop of rock.",
        "For almost four thousand years the Great Pyramid was the tallest structure made by people.",
    )),
    ("how does a rainbow form", (
        "A rainbow appears when sunlight is refracted, reflected and dispersed inside falling raindrops.",
        "To see a rainbow you must stand with the sun behind you and the rain in front of you.",
        "A double rainbow has a fainter second arc with its colours in reverse order.",
        "The colours of a rainbow run from red on the outside to violet on the inside.",
        "Mist from a waterfall or a garden hose can make a small rainbow on a sunny day.",
    )),
    ("training for a marathon", (
        "Marathon training plans build the weekly distance slowly over sixteen to twenty weeks.",
        "The long run each weekend teaches the body to burn fat and to endure hours on its feet.",
        "Runners taper in the last two weeks before the race so that their legs are fresh on the day.",
        "Energy gels and sports drinks replace the carbohydrate used up after the first hour of running.",
        "The marathon distance of forty-two kilometres was fixed at the London Olympic Games of 1908.",
    )),
    ("how do vaccines work", (
        "A vaccine shows the immune system a harmless piece or copy of a pathogen so it learns to recognise it.",
        "After vaccination, memory cells remain in the body and react quickly if the real infection arrives.",
        "Some vaccines need a booster dose years later because protection fades over time.",
        "When most of a population is immune, a disease cannot spread easily, which protects the unvaccinated.",
        "Smallpox was eradicated worldwide in 1980 after a long vaccination campaign.",
    )),
    ("what do cats eat", (
        "Cats are obligate carnivores and need nutrients such as taurine that are found in meat.",
        "Many adult cats cannot digest the lactose in milk well, despite the popular image.",
        "Dry cat food keeps for longer, while wet food helps a cat take in more water.",
        "Cats hunt alone and often bring mice or birds back to the house.",
        "Kittens need several small meals a day as they grow quickly in their first months.",
    )),
    ("how to train a puppy", (
        "Puppies learn best with short training sessions and a treat or praise right after the wanted behaviour.",
        "House training means taking the puppy outside after meals, naps and play, and rewarding it there.",
        "Socialising a young dog with people, sounds and other dogs prevents fear later in life.",
        "Teaching a dog to sit, stay and come back when called keeps it safe on walks.",
        "Dogs were domesticated from wolves many thousands of years ago and now come in hundreds of breeds.",
    )),
    ("how does the moon affect tides", (
        "The gravity of the Moon pulls on the oceans and raises a bulge of water on the side facing it.",
        "Most coasts see two high tides and two low tides roughly every twenty-five hours.",
        "Spring tides, with the largest range, happen when the Sun and Moon line up at new and full moon.",
        "The Bay of Fundy in Canada has some of the highest tides in the world, over fifteen metres.",
        "Tidal power stations turn the flow of the tide through a barrage into electricity.",
    )),
    ("how do solar panels generate electricity", (
        "Solar panels are made of silicon cells that release electrons when light falls on them.",
        "An inverter turns the direct current of solar panels into the alternating current used at home.",
        "Panels facing south at the right tilt collect the most sunlight in the northern hemisphere.",
        "The price of solar electricity has fallen by about ninety percent over the past decade.",
        "Batteries store surplus solar power during the day for use in the evening.",
    )),
    ("history of the printing press", (
        "Johannes Gutenberg built a printing press with movable metal type in Mainz around 1450.",
        "The Gutenberg Bible was one of the first books printed in Europe with movable type.",
        "Printing made books cheaper and helped ideas of the Reformation and the Renaissance spread.",
        "Centuries earlier, printers in China and Korea had used woodblocks and movable type of clay and metal.",
        "Newspapers became common in the seventeenth century as printing presses spread across Europe.",
    )),
    ("how do airplanes fly", (
        "The curved wing of an airplane deflects air downward, and the air pushes the wing up in return.",
        "Jet engines suck in air, compress it, burn fuel in it and blow the hot gas out of the back.",
        "Pilots raise the nose to increase the angle of the wing and gain lift during take-off.",
        "Flaps on the wings extend during landing so the plane can fly slowly without stalling.",
        "The Wright brothers made the first powered, controlled airplane flight in 1903.",
    )),
    ("how to grow tomatoes", (
        "Tomato seeds are sown indoors six to eight weeks before the last spring frost.",
        "Tomato plants need full sun, regular watering and a stake or cage to hold up the heavy fruit.",
        "Pinching out the side shoots of tall tomato varieties puts the plant's energy into the fruit.",
        "Blossom end rot on tomatoes is caused by uneven watering that limits calcium in the fruit.",
        "Basil and marigolds are often planted next to tomatoes in the vegetable garden.",
    )),
    ("why do we need sleep", (
        "During deep sleep the brain consolidates memories formed during the day.",
        "Adults need about seven to nine hours of sleep a night, and teenagers need more.",
        "Blue light from screens in the evening can delay the release of the sleep hormone melatonin.",
        "Dreams happen mostly during rapid eye movement sleep, when the brain is very active.",
        "Missing a night of sleep slows reaction time as much as drinking alcohol does.",
    )),
    ("rules of chess", (
        "In chess each player starts with sixteen pieces: a king, a queen, two rooks, two bishops, two knights and "
        "eight pawns.",
        "The knight moves in an L shape and is the only piece that can jump over others.",
        "The game is won by checkmate, when the king is attacked and has no legal move to escape.",
        "Castling moves the king two squares towards a rook, which then jumps to the other side of the king.",
        "A pawn that reaches the far side of the board is promoted, usually to a queen.",
    )),
    ("how do volcanoes erupt", (
        "Volcanoes erupt when molten rock, called magma, rises from below and gas bubbles push it out.",
        "Runny basalt lava flows far from the vent, as on the volcanoes of Hawaii and Iceland.",
        "Sticky magma traps gas and can explode violently, throwing ash high into the atmosphere.",
        "The eruption of Mount Vesuvius in the year 79 buried the Roman towns of Pompeii and Herculaneum.",
        "Volcanic ash makes fertile soil, which is why farms often grow on the slopes of volcanoes.",
    )),
    ("how to make fresh pasta", (
        "Fresh pasta dough is made from flour and eggs, kneaded until smooth and rested for half an hour.",
        "The dough is rolled thin with a pin or a pasta machine and cut into ribbons of tagliatelle.",
        "Fresh pasta cooks in two or three minutes in plenty of salted boiling water.",
        "Dried pasta from durum wheat semolina keeps for months and holds its shape when cooked.",
        "Ravioli are squares of pasta filled with cheese, spinach or meat and sealed at the edges.",
    )),
    ("how does the heart pump blood", (
        "The heart has four chambers: two atria receive blood and two ventricles pump it out.",
        "The right side of the heart sends blood to the lungs, and the left side pumps it to the rest of the body.",
        "Valves between the chambers close in turn and make the sound of the heartbeat.",
        "An electrical signal from the sinus node sets the rhythm of the heart, about seventy beats a minute at "
        "rest.",
        "Regular exercise strengthens the heart muscle and lowers the resting heart rate.",
    )),
    ("how do glaciers move", (
        "Glaciers form where more snow falls each winter than melts in summer, compressing into ice.",
        "The weight of a glacier makes the ice flow slowly downhill, a few metres to hundreds of metres a year.",
        "Glaciers carve U-shaped valleys and leave piles of rock called moraines where they melt.",
        "Most mountain glaciers have shrunk over the past century as temperatures have risen.",
        "Icebergs break off where glaciers reach the sea, a process called calving.",
    )),
    ("longest rivers in the world", (
        "The Nile and the Amazon are the two longest rivers in the world, each over six thousand kilometres.",
        "The Amazon carries more water than any other river, about a fifth of all river flow into the oceans.",
        "The Yangtze is the longest river in Asia and flows through the Three Gorges Dam.",
        "The Mississippi and its tributaries drain most of the land between the Rocky Mountains and the "
        "Appalachians.",
        "Rivers carry sediment to the sea and build deltas at their mouths.",
    )),
    ("how to save money on groceries", (
        "Planning meals for the week and writing a shopping list cuts down on impulse purchases.",
        "Store brands are often made in the same factories as name brands and cost less.",
        "Buying rice, beans and oats in bulk lowers the price per kilogram.",
        "Frozen vegetables are picked ripe, keep for months and cost less than many fresh ones.",
        "Cooking large batches and freezing portions saves both money and time on busy evenings.",
    )),
    ("what is photosynthesis", (
        "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar and release oxygen.",
        "Chlorophyll in the leaves absorbs red and blue light and reflects green, which is why leaves look green.",
        "In autumn chlorophyll breaks down and the yellow and orange pigments of the leaves show through.",
        "Algae in the oceans produce a large share of the oxygen in the atmosphere.",
        "Greenhouse growers add carbon dioxide to the air to make plants grow faster.",
    )),
    ("how does a refrigerator keep food cold", (
        "A refrigerator pumps heat out of its insulated box using a refrigerant that evaporates and condenses.",
        "The coils on the back of the fridge release the heat taken from the food into the kitchen.",
        "Keeping the fridge at about four degrees Celsius slows the growth of bacteria in food.",
        "Before electric refrigerators, people kept food cold in ice boxes filled with blocks of ice.",
        "Leaving the fridge door open lets warm air in and makes the compressor work harder.",
    )),
    ("origins of the olympic games", (
        "The ancient Olympic Games were held at Olympia in Greece every four years from 776 BC.",
        "The modern Olympic Games began in Athens in 1896, organised by Pierre de Coubertin.",
        "The Winter Olympics started in 1924 in Chamonix with skiing, skating and ice hockey.",
        "The Olympic rings stand for the five inhabited continents joined together.",
        "The Olympic torch is lit from the sun's rays at Olympia months before the games open.",
    )),
    ("how do computers store data", (
        "Computers store data as bits, ones and zeros, grouped into bytes of eight bits each.",
        "A solid state drive keeps data in flash memory chips with no moving parts.",
        "A hard disk stores data magnetically on spinning platters read by a moving head.",
        "Memory, or RAM, holds the programs that are running and loses its contents when the power is off.",
        "Backups on a second drive or in the cloud protect files if a disk fails.",
    )),
    ("how to learn a new language", (
        "Speaking with native speakers from the start helps learners get used to the rhythm of a language.",
        "Spaced repetition flashcards help learners remember new vocabulary for the long term.",
        "Watching films with subtitles in the language trains the ear and teaches everyday expressions.",
        "Children pick up the sounds of a second language more easily than adults do.",
        "Grammar makes more sense once a learner has heard many examples of it in use.",
    )),
    # Topics without a query: documents only, the distractors of every ranking.
    ("", (
        "The violin has four strings tuned in fifths and is played with a bow strung with horsehair.",
        "An orchestra usually tunes to the note A played by the oboe.",
        "The piano can play loud and soft notes, which gave it its original name, the pianoforte.",
        "Mozart wrote his first symphony when he was eight years old.",
        "Jazz grew out of blues and ragtime in New Orleans at the start of the twentieth century.",
    )),
    ("", (
        "A bicycle chain transfers the force of the pedals to the rear wheel.",
        "Gears let a cyclist keep a comfortable pedalling speed on hills and flat roads.",
        "Checking tyre pressure before a ride prevents punctures and makes cycling easier.",
        "The Tour de France is a three-week cycling race held every July.",
        "Cycle lanes separated from traffic make more people willing to ride to work.",
    )),
    ("", (
        "Penguins live almost only in the southern hemisphere, from Antarctica to the Galapagos Islands.",
        "Emperor penguins huddle together to survive the Antarctic winter while the males keep the eggs warm.",
        "Penguins cannot fly, but their wings work as flippers that make them fast swimmers.",
        "Polar bears live in the Arctic and hunt seals on the sea ice.",
        "The Arctic fox turns white in winter and brown in summer to match its surroundings.",
    )),
    ("", (
        "Saturn's rings are made of countless pieces of ice and rock, from grains of dust to boulders.",
        "Jupiter is the largest planet in the solar system and has a storm larger than the Earth.",
        "Mars has the tallest volcano in the solar system, Olympus Mons.",
        "Venus is the hottest planet because its thick carbon dioxide atmosphere traps heat.",
        "Light from the Sun takes about eight minutes to reach the Earth.",
    )),
    ("", (
        "Bamboo is a grass, and some species grow nearly a metre in a single day.",
        "Giant pandas eat bamboo for most of the day to get enough energy from it.",
        "Oak trees can live for several hundred years and support many species of insects.",
        "Redwoods on the coast of California are the tallest trees on Earth.",
        "Tree rings record the age of a tree and the weather of each year it grew.",
    )),
    ("", (
        "A good night of rest and a warm breakfast make a cold winter morning easier.",
        "Snow falls when the air is cold enough for ice crystals to reach the ground without melting.",
        "Hail forms in thunderstorms when raindrops are carried up into freezing air again and again.",
        "Fog is a cloud that touches the ground, common on calm nights after a humid day.",
        "Weather forecasts use computer models of the atmosphere run several times a day.",
    )),
    ("", (
        "The Great Wall of China was built and rebuilt over many dynasties to guard the northern frontier.",
        "Machu Picchu is a fifteenth-century Inca citadel high in the Andes of Peru.",
        "The Colosseum in Rome could seat about fifty thousand spectators for games and shows.",
        "Stonehenge was built in stages on Salisbury Plain between five and four thousand years ago.",
        "Angkor Wat in Cambodia is the largest religious monument in the world.",
    )),
    ("", (
        "Washing hands with soap for twenty seconds removes most germs.",
        "Brushing teeth twice a day with fluoride toothpaste prevents cavities.",
        "Drinking water through the day helps the body regulate its temperature.",
        "Sunscreen protects the skin from ultraviolet rays that cause sunburn.",
        "Stretching after exercise can ease stiffness in the muscles.",
    )),
    ("", (
        "Trains that run on electricity produce far less pollution than diesel trains.",
        "High speed trains in Japan, called Shinkansen, reach speeds of three hundred kilometres an hour.",
        "The first public railway to use steam locomotives opened in England in 1825.",
        "Subways carry millions of passengers under the streets of large cities every day.",
        "A sleeper train lets travellers cover long distances overnight in a bed.",
    )),
    ("", (
        "Football is played by two teams of eleven players who try to kick the ball into the other team's goal.",
        "Basketball was invented in 1891 by James Naismith with a peach basket as the hoop.",
        "A tennis match is won by the player who first takes two or three sets.",
        "Cricket matches between national teams can last up to five days.",
        "Swimming is one of the few sports that trains almost every muscle of the body.",
    )),
)

QUERIES: tuple[str, ...] = tuple(query for query, _ in _TOPICS if query)
DOCUMENTS: tuple[str, ...] = tuple(document for _, documents in _TOPICS for document in documents)
