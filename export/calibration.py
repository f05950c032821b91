"""Inputs of the test-model factory that need no torch: its default tokenizer, and the texts it
calibrates sparsity on (built-in neutral ones, or the caller's own).

The built-in set was written for this package (no dataset is shipped): short claims and questions as
queries, and long encyclopedic paragraphs as passages, so that passages fill the document max length
as the SciFact abstracts the factory was first tuned on do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from spladerunner_export.errors import ExportError

# A BERT WordPiece tokenizer: a tokenizer.json file, a folder holding one, or a hub id.
DEFAULT_TOKENIZER = "google-bert/bert-base-uncased"


@dataclass(frozen=True)
class CalibrationTexts:
    """Queries and passages whose SPLADE active-term counts the factory steers into its target ranges."""

    queries: tuple[str, ...]
    passages: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.queries or not self.passages:
            raise ExportError("calibration needs at least one query and one passage")
        if not all(isinstance(t, str) and t.strip() for t in (*self.queries, *self.passages)):
            raise ExportError("calibration texts must be non-empty strings")

    @classmethod
    def read(cls, path: str | Path) -> CalibrationTexts:
        """A JSON file `{"queries": [...], "passages": [...]}`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ExportError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in ("queries", "passages")):
            raise ExportError(f'{path}: expected an object {{"queries": [...], "passages": [...]}}')
        try:
            return cls(tuple(data["queries"]), tuple(data["passages"]))
        except ExportError as exc:
            raise ExportError(f"{path}: {exc}") from None


QUERIES = (
    "Regular aerobic exercise lowers resting blood pressure in older adults.",
    "how do vaccines train the immune system to recognise a virus",
    "Vitamin D supplements reduce the risk of bone fractures in women after menopause.",
    "what causes the seasons on earth",
    "Antibiotic resistance spreads between bacteria through plasmids.",
    "Children who sleep less than eight hours a night score lower on memory tests.",
    "why do leaves change colour in autumn",
    "Coffee consumption is associated with a lower risk of type 2 diabetes.",
    "Mutations in the BRCA1 gene increase the lifetime risk of breast cancer.",
    "how long does it take light from the sun to reach the earth",
    "Air pollution from fine particles shortens life expectancy in large cities.",
    "Insulin resistance develops before blood glucose rises in prediabetes.",
    "what is the difference between weather and climate",
    "Statins reduce cardiovascular events in patients without prior heart disease.",
    "Gut bacteria influence how the body stores fat.",
    "which enzyme breaks down starch in human saliva",
    "Smoking during pregnancy is linked to low birth weight.",
    "Honeybee colonies decline when exposed to neonicotinoid pesticides.",
    "how does a lithium-ion battery store energy",
    "Malaria parasites develop resistance to artemisinin in Southeast Asia.",
    "Early treatment with corticosteroids improves survival in severe pneumonia.",
    "what role does dopamine play in motivation and reward",
    "Stem cells from bone marrow can repair damaged heart tissue after infarction.",
    "Long-term meditation practice changes the structure of the prefrontal cortex.",
)

PASSAGES = (
    "Photosynthesis and the carbon cycle. Photosynthesis is the process by which green plants, algae and "
    "cyanobacteria convert light energy into chemical energy. In the chloroplasts of leaf cells, chlorophyll "
    "absorbs mostly blue and red light and uses its energy to split water molecules, releasing oxygen as a "
    "by-product. The electrons freed in this reaction travel along a chain of proteins in the thylakoid "
    "membrane, pumping protons and driving the synthesis of ATP and NADPH. In the second stage, known as the "
    "Calvin cycle, the enzyme rubisco fixes carbon dioxide from the air onto a five-carbon sugar, and the "
    "energy carriers produced by the light reactions reduce the products to glyceraldehyde phosphate, from "
    "which glucose, sucrose, starch and cellulose are built. Rubisco is slow and sometimes binds oxygen instead "
    "of carbon dioxide, a wasteful reaction called photorespiration; maize, sugarcane and other C4 plants "
    "concentrate carbon dioxide around the enzyme to avoid it, while cacti and pineapples open their stomata "
    "only at night. Globally, photosynthesis removes roughly one hundred and twenty billion tonnes of carbon "
    "from the atmosphere each year, most of which returns through respiration, decay and fire. Forests, "
    "grasslands, peat bogs and the phytoplankton of the oceans therefore act as large reservoirs in the "
    "carbon cycle, and changes in land use, drought or ocean temperature can shift the balance between uptake "
    "and release, with consequences for atmospheric carbon dioxide concentrations and the global climate.",
    "The human immune system. The immune system protects the body against bacteria, viruses, fungi and "
    "parasites with two cooperating branches. Innate immunity responds within minutes: the skin and mucous "
    "membranes form barriers, neutrophils and macrophages engulf invaders, and proteins of the complement "
    "system punch holes in bacterial membranes. Cells of the innate system carry receptors that recognise "
    "molecular patterns shared by many microbes, such as bacterial lipopolysaccharide or viral double-stranded "
    "RNA, and they release cytokines that cause inflammation, fever and the recruitment of further cells. "
    "Adaptive immunity is slower but highly specific. B lymphocytes produce antibodies that bind a single "
    "antigen, neutralising toxins and marking pathogens for destruction, while cytotoxic T lymphocytes kill "
    "infected cells that display fragments of viral proteins on their surface. Helper T cells coordinate both "
    "responses. After an infection is cleared, long-lived memory cells remain in the lymph nodes, spleen and "
    "bone marrow, so that a second encounter with the same pathogen produces a faster and stronger response. "
    "Vaccination exploits this memory by presenting a harmless form of an antigen, for example an inactivated "
    "virus, a purified protein or messenger RNA encoding a viral protein. Failures of regulation cause "
    "disease: allergies arise when harmless substances such as pollen trigger a response, and autoimmune "
    "disorders such as type 1 diabetes, multiple sclerosis and rheumatoid arthritis occur when the adaptive "
    "system attacks the body's own tissues, often years before symptoms appear.",
    "The industrial revolution. Between about 1760 and 1840, Britain changed from an economy of farms and "
    "workshops into one dominated by factories, coal and machines. Improvements in agriculture, including "
    "crop rotation and the enclosure of common land, raised food production and released labour from the "
    "countryside. In the textile industry, inventions such as the spinning jenny, the water frame and the "
    "power loom multiplied the output of each worker, and cotton mills grew up along fast rivers in Lancashire "
    "and Derbyshire. The steam engine, refined by James Watt in the 1770s, freed factories from rivers and "
    "later drove locomotives and ships, while cheap coke-smelted iron made bridges, rails and machinery "
    "affordable. Canals and then railways cut the cost of moving coal and goods, linking ports, mines and "
    "growing industrial towns such as Manchester, Birmingham and Leeds. The changes spread to Belgium, France, "
    "Germany and the United States during the nineteenth century. Living conditions in the new cities were "
    "often harsh: families crowded into damp housing without clean water, cholera and tuberculosis spread "
    "quickly, and children worked long shifts in mills and mines. Reformers, trade unions and new laws "
    "gradually limited working hours, introduced factory inspection and built sewers and public health "
    "systems. Historians still debate why the transformation began in Britain, pointing to its coal deposits, "
    "high wages, colonial trade, stable institutions, banking and a culture of practical invention.",
    "Plate tectonics. The outer shell of the earth, the lithosphere, is broken into about fifteen major plates "
    "that move a few centimetres each year over the hotter, softer mantle beneath. Where plates separate, as "
    "along the mid-Atlantic ridge, molten rock rises and cools to form new oceanic crust; where they converge, "
    "the denser plate sinks back into the mantle in a subduction zone, producing deep ocean trenches, chains "
    "of volcanoes such as the Andes and the Cascades, and the largest earthquakes on record. When two "
    "continents collide, neither sinks easily, and the crust crumples into high mountain ranges: the Himalayas "
    "are still rising as India pushes into Asia. At transform boundaries such as the San Andreas fault, plates "
    "slide past each other and stress builds until it is released suddenly. The theory grew from Alfred "
    "Wegener's proposal of continental drift in 1912, which was long rejected because no mechanism was known. "
    "In the 1950s and 1960s, surveys of the sea floor revealed symmetric stripes of magnetised rock on either "
    "side of the ridges, recording reversals of the earth's magnetic field and showing that the ocean floor "
    "spreads. Measurements from satellites and the global positioning system now track plate motion directly. "
    "Plate tectonics explains the distribution of fossils, mineral deposits and volcanoes, and over hundreds of "
    "millions of years it has assembled and broken apart supercontinents such as Pangaea, reshaping oceans, "
    "climate and the evolution of life.",
    "Bread and fermentation. Bread is made by mixing flour with water, salt and a leavening agent, kneading the "
    "dough to develop gluten, and baking it. Gluten forms when two wheat proteins, glutenin and gliadin, bond "
    "in the presence of water into an elastic network that traps gas. In most breads the gas comes from yeast, "
    "a single-celled fungus that ferments sugars released from starch by the flour's own enzymes, producing "
    "carbon dioxide and ethanol. Sourdough relies instead on a culture of wild yeasts and lactic acid bacteria "
    "kept alive by regular feeding; the bacteria produce lactic and acetic acids that give the bread its sour "
    "taste, slow staling and lower the glycaemic response. Temperature controls the pace: cool, long "
    "fermentation develops more flavour, while warm dough rises quickly. During baking, the gas expands and "
    "the yeast dies near sixty degrees Celsius; the starch gelatinises and the proteins set, fixing the crumb. "
    "At the surface, the Maillard reaction between sugars and amino acids and the caramelisation of sugars "
    "create the brown crust and hundreds of aroma compounds. Flat breads such as chapati, tortilla and pita "
    "use little or no leavening and cook in minutes on a hot surface. Archaeologists have found charred "
    "remains of bread baked more than fourteen thousand years ago in Jordan, before the domestication of "
    "cereals, suggesting that the wish to make bread may have encouraged early farming.",
    "Sleep and memory. Sleep occupies about a third of human life and is organised into cycles of roughly "
    "ninety minutes, each passing through light sleep, deep slow-wave sleep and rapid eye movement sleep. "
    "Deep sleep dominates the first half of the night and rapid eye movement sleep, with vivid dreaming, the "
    "second half. The timing of sleep is governed by a circadian clock in the suprachiasmatic nucleus of the "
    "hypothalamus, which is reset each day by light reaching the retina, and by a homeostatic pressure that "
    "builds the longer we stay awake, partly through the accumulation of adenosine; caffeine blocks adenosine "
    "receptors and so delays sleepiness. Experiments in people and animals show that sleep strengthens "
    "memories formed during the day. During slow-wave sleep, the hippocampus replays recent experiences and "
    "coordinated oscillations transfer them to the cortex for long-term storage, while rapid eye movement "
    "sleep appears to support emotional memory and the extraction of rules. Sleep deprivation impairs "
    "attention, learning, mood and glucose metabolism, and chronic short sleep is associated with obesity, "
    "hypertension and depression. Adolescents experience a delay of the circadian clock, so early school start "
    "times reduce their sleep, and several districts that moved classes later reported better attendance and "
    "grades. Common disorders include insomnia, obstructive sleep apnoea, in which the airway collapses "
    "repeatedly during the night, and narcolepsy, caused by the loss of neurons producing orexin.",
    "Antibiotics and resistance. The discovery of penicillin by Alexander Fleming in 1928, and its mass "
    "production during the Second World War, began the antibiotic era. Antibiotics kill bacteria or stop "
    "their growth by attacking structures that human cells lack or build differently: penicillins and "
    "cephalosporins block the synthesis of the cell wall, tetracyclines and macrolides jam the bacterial "
    "ribosome, and fluoroquinolones inhibit the enzymes that unwind DNA. Infections that once killed, such as "
    "pneumonia, wound infections and tuberculosis, became curable, and surgery, cancer chemotherapy and organ "
    "transplantation became far safer. Bacteria, however, evolve quickly. Random mutations and genes "
    "acquired from other bacteria on plasmids or transposons allow some cells to survive a drug, for example "
    "by producing beta-lactamase enzymes that destroy penicillin, pumping the drug out, or altering its "
    "target. Every course of antibiotics selects for these survivors, and the overuse of antibiotics in "
    "medicine and in livestock farming has accelerated the spread of resistant strains such as "
    "methicillin-resistant Staphylococcus aureus and carbapenem-resistant Enterobacteriaceae. Resistant "
    "infections are estimated to cause more than a million deaths a year worldwide. Responses include "
    "stewardship programmes that limit unnecessary prescriptions, better hygiene and infection control in "
    "hospitals, surveillance of resistance patterns, vaccines that prevent infections in the first place, "
    "and new incentives for the development of antibiotics, few of which have reached the market in recent "
    "decades.",
    "The water cycle and rivers. Water moves continuously between the oceans, the atmosphere and the land. "
    "Energy from the sun evaporates about half a million cubic kilometres of water each year, mostly from "
    "the oceans; plants add more through transpiration from their leaves. As moist air rises and cools, the "
    "vapour condenses on tiny particles of dust, salt and smoke to form clouds, and droplets or ice crystals "
    "grow until they fall as rain, snow or hail. Over land, part of the precipitation runs off into streams, "
    "part soaks into soils and recharges groundwater in aquifers, and part is stored for months or centuries "
    "in glaciers, ice sheets and lakes. Rivers gather this runoff from their drainage basins and carry water, "
    "sediment and dissolved minerals back to the sea, carving valleys, building floodplains and depositing "
    "deltas such as those of the Nile, the Ganges and the Mississippi. The flow of a river varies with the "
    "seasons: snowmelt swells alpine rivers in spring, monsoon rains flood South Asian rivers in summer. "
    "People have dammed and diverted rivers for irrigation, drinking water, navigation and hydroelectric "
    "power, which has fed growing cities but also trapped sediment, shrunk wetlands and blocked migrating "
    "fish such as salmon. A warmer climate intensifies the cycle: warmer air holds more moisture, so heavy "
    "downpours become more frequent, while higher evaporation and earlier snowmelt deepen droughts in "
    "regions that depend on stored water.",
)

BUILTIN = CalibrationTexts(QUERIES, PASSAGES)
