"""Writes data/sample-pages-articles.xml: a small dump in the MediaWiki export-0.11 schema.

Every article text here was written for cheaplm (no Wikipedia text is copied). The pages use the
markup a real dump has (links, templates, refs, tables, files, categories) so that `prepare` on the
sample exercises the same paths as on a real dump. Run: python tools/make_sample.py
"""
from pathlib import Path
from xml.sax.saxutils import escape

ARTICLES = {
"Lighthouse": """{{Short description|Tower that guides ships with a light}}
{{Infobox structure|name=Lighthouse|type=Tower}}
A '''lighthouse''' is a [[tower]] or other [[building]] that sends out light from a system of [[Lamp|lamps]] and [[lens]]es to help [[ship]]s find their way at sea or on inland [[waterway]]s.<ref>{{cite book|title=Lights of the Coast|year=1998}}</ref> Lighthouses mark dangerous coastlines, hidden [[reef]]s and safe entries to [[harbour]]s.

== History ==
The earliest lighthouses were open fires lit on hilltops. Later builders raised the fire on stone towers so that it could be seen from farther away. A tower {{convert|40|m|ft}} high can be seen from about {{convert|24|km|mi}} on a clear night, because the curve of the [[Earth]] hides lower lights sooner.<ref name="range">Distance depends on the height of the observer as well.</ref>

In the nineteenth century [[Augustin Fresnel]] designed a lens made of many rings of glass. The '''Fresnel lens''' bent the light of a small lamp into a narrow, bright beam and was soon fitted to lighthouses around the world.

== Operation ==
Each lighthouse has its own pattern of flashes, called its ''characteristic'', so that sailors can tell one light from another. The keeper once trimmed the wick, wound the clockwork that turned the lens, and kept the glass clean. Today most lights are automatic and are checked by visiting engineers.

{| class="wikitable"
|-
! Light !! Pattern
|-
| Harbour entrance || One flash every five seconds
|-
| Outer reef || Two flashes every ten seconds
|}

== See also ==
* [[Lightvessel]]
* [[Beacon]]

== References ==
{{reflist}}

[[Category:Lighthouses]]
[[Category:Navigation]]
[[fr:Phare]]""",

"Bread": """'''Bread''' is a [[food]] made from [[flour]] and [[water]], usually baked. It is one of the oldest prepared foods and is eaten in most parts of the world.<ref>{{cite web|url=http://example.org/bread|title=Bread}}</ref>

== Making bread ==
The baker mixes flour, water and [[salt]] into a [[dough]]. For a '''leavened''' bread, [[yeast]] is added; the yeast feeds on the [[sugar]]s in the flour and gives off [[carbon dioxide]], which makes the dough rise. The dough is kneaded, left to rise, shaped into loaves and baked in a hot [[oven]] at about {{convert|220|C|F}}.

Flat breads such as [[pita]] and [[tortilla]] use little or no yeast and are cooked quickly on a hot surface.

== Kinds of bread ==
[[File:Loaves on a table.jpg|thumb|right|Loaves of [[wheat]] bread cooling on a table]]
* '''White bread''' is made from flour with the bran and germ removed.
* '''Wholemeal bread''' keeps the whole grain and has more [[dietary fibre|fibre]].
* '''Rye bread''' is dark and dense and is common in northern and eastern Europe.
* '''Sourdough''' rises with wild yeast and bacteria kept in a starter from one baking to the next.

In Japan a soft white loaf called {{nihongo|milk bread|ミルクパン|miruku pan}} is popular.

== In culture ==
Bread has a place in many customs. Sharing bread is a sign of friendship in many languages, and the word ''companion'' comes from the Latin for "one who shares bread".<!-- etymology simplified -->

[[Category:Breads]]
[[Category:Staple foods]]""",

"River": """{{about|the natural watercourse|other uses|River (disambiguation)}}
A '''river''' is a natural stream of [[fresh water]] that flows toward an [[ocean]], a [[lake]], a [[sea]] or another river.<ref>''Rivers of the World'', 2004, p. 3.</ref> Small rivers are also called [[stream]]s, [[creek]]s or brooks.

== Course ==
A river begins at its '''source''', which may be a [[spring (hydrology)|spring]], a melting [[glacier]] or an area of high ground where rain collects. The first part of a river, the ''upper course'', is often steep and fast. In the ''middle course'' the valley widens and the river begins to wind in loops called [[meander]]s. In the ''lower course'' the river is wide and slow, and it drops the [[sand]] and [[silt]] it has carried. Where it meets the sea it may form a [[river delta|delta]] or an [[estuary]].

== Rivers and people ==
Rivers have given people water for drinking and farming, fish for food, and a road for [[boat]]s. Many large cities stand on rivers, and the first farming societies grew along the [[Nile]], the [[Tigris]] and [[Euphrates]], the [[Indus River|Indus]] and the [[Yellow River]].

The longest rivers are more than {{convert|6000|km|mi|abbr=on}} long. The river that carries the most water is the [[Amazon River|Amazon]].

[[Category:Rivers| ]]
[[Category:Bodies of water]]""",

"Bicycle": """A '''bicycle''', also called a '''bike''', is a [[vehicle]] with two [[wheel]]s, one behind the other, driven by [[pedal]]s. The rider sits on a saddle and steers with handlebars.<ref name="def"/>

== History ==
Early two-wheeled machines in the 1810s had no pedals; riders pushed them along with their feet. Pedals fixed to the front wheel came in the 1860s, and the tall ''penny-farthing'' followed, with a very large front wheel. The '''safety bicycle''' of the 1880s used a [[chain]] to drive the back wheel and had two wheels of the same size. With the [[pneumatic tyre]], it became the bicycle most people ride today.<ref name="def">{{cite book|last=Rider|title=Two Wheels|year=2010}}</ref>

== Parts ==
{| class="wikitable"
! Part !! Purpose
|-
| Frame || Holds the other parts together
|-
| Chain || Carries the rider's effort to the back wheel
|-
| Brakes || Slow the wheels
|}
The frame is usually made of [[steel]], [[aluminium]] or [[carbon fibre]]. [[Gear]]s let the rider pedal at a steady pace on hills and on flat roads.

== Uses ==
People ride bicycles to work and to school, for sport and for fun. Bicycles need no fuel, make no noise and take little space, so many cities build [[bike lane]]s for them. In the [[Netherlands]] there are more bicycles than people.

[[Category:Cycling]]
[[de:Fahrrad]]""",

"Honey bee": """{{Taxobox|name=Honey bee|genus=Apis}}
The '''honey bee''' is a flying [[insect]] of the genus ''[[Apis]]'' that lives in large [[colony (biology)|colonies]] and makes [[honey]] and [[beeswax]].

== Life in the colony ==
A colony has one '''queen''', a few hundred '''drones''' and many thousands of '''workers'''. The queen lays the eggs. The drones are males whose only task is to mate with a young queen. The workers are females that do everything else: they clean the [[hive]], feed the young, build the comb, guard the entrance and gather [[nectar]] and [[pollen]] from flowers.

Workers tell one another where flowers are by a movement called the '''waggle dance'''. The angle of the dance shows the direction of the food compared with the [[Sun]], and the length of the dance shows the distance.<ref>Dance studies go back to the 1940s.</ref>

== Honey ==
Bees turn nectar into honey by adding [[enzyme]]s and letting water evaporate from it in the cells of the comb. A strong colony can store more than {{convert|25|kg|lb}} of honey in a good summer.

== Importance ==
Honey bees [[pollination|pollinate]] many crops, such as [[apple]]s, [[almond]]s and [[sunflower]]s. Farmers sometimes rent hives and move them to their fields when the plants are in flower.

[[Category:Bees]]""",

"Volcano": """A '''volcano''' is an opening in the [[crust (geology)|crust]] of a [[planet]] through which hot [[magma]], [[volcanic ash|ash]] and [[gas]]es escape from below the surface.

== How volcanoes form ==
Most volcanoes are found where [[tectonic plate]]s meet. Where one plate sinks under another, rock melts and rises as magma. Where plates move apart, as along the [[Mid-Atlantic Ridge]], magma wells up to fill the gap. Some volcanoes, such as those of [[Hawaii]], stand over '''hot spots''' far from the edges of plates.

== Eruptions ==
When magma reaches the surface it is called [[lava]]. Runny lava flows a long way and builds wide, gentle '''shield volcanoes'''. Thick, sticky magma traps gas, and when the pressure is released the volcano may explode, throwing ash high into the air. Layers of ash and lava build tall, steep '''stratovolcanoes'''.<ref>{{cite journal|title=Eruption styles|year=2001}}</ref>

{| class="wikitable"
|+ Kinds of volcano
! Kind !! Shape !! Lava
|-
| Shield || Broad and low || Runny
|-
| Stratovolcano || Tall and steep || Thick
|}

== Volcanoes and people ==
The soil near volcanoes is often rich, so farmers live close to them despite the danger. Scientists watch active volcanoes for small [[earthquake]]s, swelling of the ground and new gases, which can warn that an eruption is near.

[[Category:Volcanoes]]
[[Category:Geology]]""",

"Public library": """A '''public library''' is a [[library]] that is open to everyone and is usually paid for by [[tax]]es. People can borrow [[book]]s and other materials, read in quiet rooms, use computers and ask librarians for help.

== History ==
Collections of written texts are very old, but for most of history they belonged to temples, rulers and universities. Libraries that lent books to any member of the public became common in the nineteenth century, when more people learned to read. Towns opened reading rooms, and gifts from wealthy donors paid for many library buildings.<ref>Local histories record many such gifts.</ref>

== Services ==
Besides books, a public library may lend [[newspaper]]s, [[magazine]]s, music, films and [[e-book]]s. Many run reading groups for children, classes for adults and help for people looking for work. Libraries also keep local records, maps and photographs, so they are often the best place to learn the history of a town.

== Classification ==
Books are placed on the shelves by subject. A common scheme is the [[Dewey Decimal Classification]], which gives each subject a number, so that books about the same topic stand together.

[[Category:Libraries]]""",

"Moon": """{{Infobox planet|name=Moon}}
The '''Moon''' is [[Earth]]'s only natural [[satellite]]. It is about one quarter as wide as Earth and orbits at an average distance of about {{convert|384400|km|mi}}.<ref name="nasa">{{cite web|title=Moon facts|publisher=Space agency}}</ref>

== Phases ==
The Moon does not make its own light; it shines by reflecting [[sunlight]]. As it moves around Earth, we see different amounts of its sunlit half. These changing shapes are the '''phases''': new moon, crescent, first quarter, gibbous, full moon, and back again. One cycle takes about 29.5 days, which is close to the length of a [[month]].

== Tides ==
The Moon's [[gravity]] pulls on the oceans and raises the water on the side of Earth facing it and on the far side. As Earth turns, a coast passes through these bulges, and the sea rises and falls in '''[[tide]]s''' about twice a day.

== Exploration ==
The first spacecraft reached the Moon in 1959. Ten years later, in 1969, the crew of [[Apollo 11]] became the first people to walk on its surface. Astronauts brought back rocks that showed the Moon is about as old as Earth.

[[Category:Moon| ]]
[[Category:Natural satellites]]""",

"Tea": """'''Tea''' is a drink made by pouring hot [[water]] over the dried leaves of the [[tea plant]], ''Camellia sinensis''. After water, it is one of the most widely drunk drinks in the world.<ref>Estimates differ by source.</ref>

== Origin ==
Tea was first drunk in [[China]], where it was used as a medicine before it became an everyday drink. From China it spread to [[Japan]] and [[Korea]], and much later, in the seventeenth century, traders carried it to Europe. The word for tea in many languages comes from the Chinese {{lang|zh|茶}}, pronounced ''chá'' or ''te'' in different regions.

== Kinds of tea ==
* '''Green tea''' is heated soon after picking, so the leaves stay green.
* '''Black tea''' is left to react with the air until the leaves turn dark; it has a stronger taste.
* '''Oolong''' lies between green and black tea.
* '''Herbal tea''' is not made from the tea plant at all but from other leaves, flowers or roots.

== Customs ==
Many countries have their own way of serving tea. In Britain it is often drunk with milk; in Morocco it is served sweet with [[mint]]; in Japan the tea ceremony, {{nihongo|the way of tea|茶道|sadō}}, is an art that can take years to learn.

[[Category:Tea]]
[[Category:Drinks]]""",

"Chess": """'''Chess''' is a [[board game]] for two players. Each player begins with sixteen pieces: one king, one queen, two rooks, two bishops, two knights and eight pawns. The aim is to '''checkmate''' the other player's king, which means attacking it so that it has no safe square to move to.<ref>{{cite book|title=Rules of Chess|year=2018}}</ref>

== The board ==
The game is played on a square board of 64 squares in eight rows and eight columns, coloured light and dark in turn. White moves first, and the players then take turns, one move each.

== How the pieces move ==
{| class="wikitable"
! Piece !! Move
|-
| King || One square in any direction
|-
| Rook || Any number of squares along a row or column
|-
| Bishop || Any number of squares along a diagonal
|-
| Knight || In an L shape, jumping over other pieces
|}
A pawn moves forward one square, or two on its first move, and captures one square forward on a diagonal. A pawn that reaches the far row becomes a queen or another piece.

== History ==
Chess grew from older games played in [[India]] and [[Persia]] more than a thousand years ago. The modern rules, with a strong queen and bishop, were fixed in southern Europe in the late fifteenth century. Today chess is played in clubs, in schools and online, and strong [[computer]] programs play better than any human.

[[Category:Chess| ]]
[[Category:Board games]]""",

"Glacier": """A '''glacier''' is a large, slow-moving body of [[ice]] formed from snow that has built up over many years.

== Formation ==
Where more snow falls in winter than melts in summer, the snow slowly packs down. Over years the lower layers turn into dense blue ice. When the ice is thick enough, often more than {{convert|50|m|ft}}, its own weight makes it flow downhill like a very thick liquid.

== Effects on the land ==
As a glacier moves, it scrapes the ground beneath it and carries rocks of all sizes. It can carve deep U-shaped [[valley]]s, sharp ridges and bowl-shaped hollows called [[cirque]]s. When the ice melts, it leaves behind heaps of rock and sand called [[moraine]]s. Many lakes in northern Europe and North America fill hollows made by glaciers during the last [[ice age]].<ref>Most of these date from the last glacial period.</ref>

== Glaciers today ==
Glaciers hold most of the world's fresh water. Mountain glaciers feed rivers in summer with their meltwater. Many glaciers are becoming smaller, which scientists link to a warming [[climate]].

[[Category:Glaciers]]""",

"Printing press": """A '''printing press''' is a machine that presses an inked surface onto [[paper]] or cloth to copy text and pictures many times.

== Before the press ==
Before printing, books were copied by hand, which was slow and costly. In East Asia, printing with carved wooden blocks was in use by the eighth century, and [[movable type]] made of clay and later metal was also developed there.

== The press in Europe ==
Around 1440 [[Johannes Gutenberg]] of [[Mainz]] combined metal movable type, an oil-based ink and a screw press adapted from those used to make wine. His workshop could print far more pages in a day than a scribe could copy in a year. Printing spread quickly to other cities, and by 1500 presses were working in more than two hundred towns.<ref>{{cite book|title=The First Printers|year=1995}}</ref>

== Effects ==
Cheaper books helped more people learn to read. Scholars could share exact copies of the same text, which helped science, and new ideas travelled faster than ever before. Newspapers, pamphlets and posters followed.

[[Category:Printing]]""",

"Windmill": """A '''windmill''' is a structure that turns the energy of the [[wind]] into turning motion by means of sails or blades.

== Uses ==
For centuries windmills ground [[grain]] into flour, which is why the building is called a ''mill''. In the [[Netherlands]] windmills pumped water out of low land to keep it dry for farming. Windmills were also used to saw wood and to press oil from seeds.

== How it works ==
The wind pushes on the sails, which are set at an angle, and makes them turn. The turning shaft drives gears inside the mill. In a '''post mill''' the whole body of the mill turns to face the wind; in a '''tower mill''' only the cap with the sails turns.

Modern '''wind turbines''' use the same idea to make [[electricity]]. Their blades can be more than {{convert|80|m|ft}} long.

[[Category:Windmills]]""",

"Coral reef": """A '''coral reef''' is an underwater structure built by tiny animals called [[coral]] polyps. Each polyp makes a hard skeleton of [[calcium carbonate]], and over thousands of years these skeletons build up into reefs.

Coral reefs grow best in warm, clear, shallow water in the [[tropics]]. The largest, the [[Great Barrier Reef]] off the coast of [[Australia]], is more than {{convert|2000|km|mi}} long and can be seen from space.

Reefs cover a very small part of the ocean floor, yet about a quarter of all sea species live on or near them. Fish, crabs, sea turtles and many other animals find food and shelter there. Reefs also protect coasts from waves during storms.

Many reefs are in danger. When the water becomes too warm, corals lose the small [[algae]] that live inside them and give them their colour; this is called '''coral bleaching'''.<ref>Bleaching events have become more frequent.</ref>

[[Category:Coral reefs]]""",
}

REDIRECTS = {"Lighthouses": "Lighthouse", "Loaf": "Bread", "Bike": "Bicycle"}
OTHER_NAMESPACES = [("Talk:Lighthouse", 1, "Should the table list more patterns? ~~~~"),
                    ("Category:Breads", 14, "Articles about kinds of bread.")]

HEADER = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.11/ http://www.mediawiki.org/xml/export-0.11.xsd" version="0.11" xml:lang="en">
  <siteinfo>
    <sitename>cheaplm sample</sitename>
    <dbname>samplewiki</dbname>
    <base>https://example.org/wiki/Main_Page</base>
    <generator>cheaplm tools/make_sample.py</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="6" case="first-letter">File</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
      <namespace key="14" case="first-letter">Category</namespace>
    </namespaces>
  </siteinfo>
"""


def page(title, ns, pid, text, redirect=None):
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return f"""  <page>
    <title>{escape(title)}</title>
    <ns>{ns}</ns>
    <id>{pid}</id>
{red}    <revision>
      <id>{pid * 10}</id>
      <timestamp>2026-11-28T00:00:00Z</timestamp>
      <contributor>
        <username>cheaplm</username>
        <id>1</id>
      </contributor>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>
    </revision>
  </page>
"""


def main():
    parts = [HEADER]
    pid = 1
    for title, text in ARTICLES.items():
        parts.append(page(title, 0, pid, text))
        pid += 1
    for title, target in REDIRECTS.items():
        parts.append(page(title, 0, pid, f"#REDIRECT [[{target}]]", redirect=target))
        pid += 1
    for title, ns, text in OTHER_NAMESPACES:
        parts.append(page(title, ns, pid, text))
        pid += 1
    parts.append("</mediawiki>\n")
    out = Path(__file__).resolve().parent.parent / "data" / "sample-pages-articles.xml"
    out.write_text("".join(parts), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size:,} bytes, {len(ARTICLES)} articles)")


if __name__ == "__main__":
    main()
