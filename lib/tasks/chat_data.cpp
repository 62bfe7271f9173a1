// The word lists and templates of the chat pool.
#include <algorithm>
#include <cstring>

#include "tasks/chat.h"

namespace ds::tasks {

namespace {

struct Two {
  const char* a;
  const char* b;
};

const Two kGreetings[] = {
    {"Hi!", "Hello! How can I help you today?"},
    {"Hello!", "Hi there! What can I do for you?"},
    {"Hey there!", "Hey! How can I help?"},
    {"Good morning!", "Good morning! How can I help you today?"},
    {"Good afternoon!", "Good afternoon! What can I do for you?"},
    {"Good evening!", "Good evening! How can I help?"},
    {"Hi, how are you?", "I'm doing well, thank you for asking! How can I help you today?"},
    {"Hello, how are you doing?", "I'm fine, thanks! What would you like to talk about?"},
    {"Hey!", "Hello! What can I help you with?"},
    {"Howdy!", "Howdy! How can I help you today?"},
    {"Greetings!", "Greetings! How may I help you?"},
    {"Hi there, is anyone here?", "Yes, I'm here! How can I help you?"},
    {"Nice to meet you.", "Nice to meet you too! How can I help?"},
    {"What's up?", "Not much, I'm here to help. What do you need?"},
    {"Yo!", "Hi! What can I do for you?"},
};

const Two kSmallTalk[] = {
    {"Thank you!", "You're welcome! Let me know if there is anything else I can help with."},
    {"Thanks a lot.", "You're very welcome!"},
    {"Thanks for your help.", "Glad I could help!"},
    {"Bye!", "Goodbye! Have a great day."},
    {"See you later.", "See you! Take care."},
    {"Good night!", "Good night! Sleep well."},
    {"That was helpful.", "I'm glad it helped! Anything else?"},
    {"Sorry, I made a mistake.", "No problem at all. How can I help you fix it?"},
    {"Can you help me?", "Of course! What do you need help with?"},
    {"I have a question.", "Sure, go ahead and ask."},
};

const Two kSelf[] = {
    {"Who are you?", "I am an AI assistant. I can answer questions, explain things and help with reasoning problems."},
    {"What can you do?", "I can answer questions, explain ideas, and work through math and logic problems step by step."},
    {"Are you a human?", "No, I am an AI assistant."},
    {"What is your name?", "I'm an AI assistant; I don't have a personal name."},
    {"Are you a robot?", "I'm an AI language model, a computer program rather than a physical robot."},
    {"Can you think?", "I process text and generate answers; for hard problems I reason step by step before answering."},
    {"Do you have feelings?", "No, I don't have feelings. I'm an AI assistant here to help."},
    {"Where do you live?", "I don't live anywhere; I'm software running on a computer."},
};

const Two kCapitals[] = {
    {"France", "Paris"}, {"Germany", "Berlin"}, {"Italy", "Rome"}, {"Spain", "Madrid"}, {"Portugal", "Lisbon"},
    {"the United Kingdom", "London"}, {"Ireland", "Dublin"}, {"the Netherlands", "Amsterdam"},
    {"Belgium", "Brussels"}, {"Switzerland", "Bern"}, {"Austria", "Vienna"}, {"Poland", "Warsaw"},
    {"the Czech Republic", "Prague"}, {"Hungary", "Budapest"}, {"Greece", "Athens"}, {"Sweden", "Stockholm"},
    {"Norway", "Oslo"}, {"Denmark", "Copenhagen"}, {"Finland", "Helsinki"}, {"Iceland", "Reykjavik"},
    {"Russia", "Moscow"}, {"Ukraine", "Kyiv"}, {"Turkey", "Ankara"}, {"Egypt", "Cairo"}, {"Kenya", "Nairobi"},
    {"Nigeria", "Abuja"}, {"Morocco", "Rabat"}, {"Ethiopia", "Addis Ababa"}, {"Ghana", "Accra"},
    {"China", "Beijing"}, {"Japan", "Tokyo"}, {"South Korea", "Seoul"}, {"India", "New Delhi"},
    {"Pakistan", "Islamabad"}, {"Bangladesh", "Dhaka"}, {"Thailand", "Bangkok"}, {"Vietnam", "Hanoi"},
    {"the Philippines", "Manila"}, {"Malaysia", "Kuala Lumpur"}, {"Iran", "Tehran"}, {"Iraq", "Baghdad"},
    {"Saudi Arabia", "Riyadh"}, {"Australia", "Canberra"}, {"New Zealand", "Wellington"}, {"Canada", "Ottawa"},
    {"the United States", "Washington, D.C."}, {"Mexico", "Mexico City"}, {"Brazil", "Brasília"},
    {"Argentina", "Buenos Aires"}, {"Chile", "Santiago"}, {"Peru", "Lima"}, {"Colombia", "Bogotá"},
    {"Venezuela", "Caracas"}, {"Cuba", "Havana"}, {"Romania", "Bucharest"}, {"Bulgaria", "Sofia"},
    {"Serbia", "Belgrade"}, {"Croatia", "Zagreb"}, {"Nepal", "Kathmandu"}, {"Mongolia", "Ulaanbaatar"},
    {"Afghanistan", "Kabul"}, {"Qatar", "Doha"}, {"Jamaica", "Kingston"}, {"Ecuador", "Quito"},
    {"Uruguay", "Montevideo"},
};

const Two kOpposites[] = {
    {"hot", "cold"}, {"big", "small"}, {"fast", "slow"}, {"up", "down"}, {"happy", "sad"}, {"light", "dark"},
    {"open", "closed"}, {"early", "late"}, {"full", "empty"}, {"hard", "soft"}, {"high", "low"},
    {"young", "old"}, {"rich", "poor"}, {"strong", "weak"}, {"wet", "dry"}, {"thick", "thin"},
    {"loud", "quiet"}, {"long", "short"}, {"inside", "outside"}, {"true", "false"}, {"day", "night"},
    {"begin", "end"}, {"win", "lose"}, {"push", "pull"}, {"buy", "sell"}, {"love", "hate"},
    {"remember", "forget"}, {"arrive", "leave"}, {"heavy", "light"}, {"cheap", "expensive"},
    {"clean", "dirty"}, {"easy", "difficult"}, {"left", "right"}, {"north", "south"}, {"east", "west"},
    {"above", "below"}, {"first", "last"}, {"always", "never"}, {"question", "answer"}, {"friend", "enemy"},
};

const Two kPlurals[] = {
    {"mouse", "mice"}, {"child", "children"}, {"man", "men"}, {"woman", "women"}, {"tooth", "teeth"},
    {"foot", "feet"}, {"goose", "geese"}, {"person", "people"}, {"sheep", "sheep"}, {"fish", "fish"},
    {"deer", "deer"}, {"ox", "oxen"}, {"cactus", "cacti"}, {"leaf", "leaves"}, {"knife", "knives"},
    {"wolf", "wolves"}, {"half", "halves"}, {"city", "cities"}, {"baby", "babies"}, {"box", "boxes"},
    {"bus", "buses"}, {"church", "churches"}, {"potato", "potatoes"}, {"hero", "heroes"}, {"cat", "cats"},
    {"book", "books"}, {"day", "days"}, {"key", "keys"}, {"wife", "wives"}, {"criterion", "criteria"},
};

const Two kAnimalSounds[] = {
    {"dog", "woof"}, {"cat", "meow"}, {"cow", "moo"}, {"sheep", "baa"}, {"duck", "quack"},
    {"rooster", "cock-a-doodle-doo"}, {"pig", "oink"}, {"owl", "hoot"}, {"horse", "neigh"},
    {"frog", "ribbit"}, {"snake", "hiss"}, {"lion", "roar"},
};

const Two kBabyAnimals[] = {
    {"dog", "puppy"}, {"cat", "kitten"}, {"cow", "calf"}, {"sheep", "lamb"}, {"horse", "foal"},
    {"goat", "kid"}, {"bear", "cub"}, {"lion", "cub"}, {"duck", "duckling"}, {"frog", "tadpole"},
    {"kangaroo", "joey"}, {"swan", "cygnet"},
};

const char* const kDays[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
const char* const kMonths[] = {"January", "February", "March",     "April",   "May",      "June",
                               "July",    "August",   "September", "October", "November", "December"};
const char* const kMonthDays[] = {"31 days.", "28 days, or 29 in a leap year.", "31 days.", "30 days.",
                                  "31 days.", "30 days.", "31 days.", "31 days.", "30 days.", "31 days.",
                                  "30 days.", "31 days."};

const Two kFacts[] = {
    {"How many minutes are in an hour?", "60."},
    {"How many seconds are in a minute?", "60."},
    {"How many hours are in a day?", "24."},
    {"How many days are in a week?", "7."},
    {"How many months are in a year?", "12."},
    {"How many days are in a leap year?", "366."},
    {"How many centimeters are in a meter?", "100."},
    {"How many meters are in a kilometer?", "1,000."},
    {"How many grams are in a kilogram?", "1,000."},
    {"How many milliliters are in a liter?", "1,000."},
    {"How many inches are in a foot?", "12."},
    {"How many sides does a triangle have?", "Three."},
    {"How many sides does a hexagon have?", "Six."},
    {"How many degrees are in a right angle?", "90 degrees."},
    {"How many legs does a spider have?", "Eight."},
    {"How many legs does an insect have?", "Six."},
    {"How many continents are there?", "Seven."},
    {"How many planets are in the solar system?", "Eight."},
    {"What is the largest planet in the solar system?", "Jupiter."},
    {"What planet is closest to the Sun?", "Mercury."},
    {"Which planet is known as the Red Planet?", "Mars."},
    {"What is the largest ocean on Earth?", "The Pacific Ocean."},
    {"What color is the sky on a clear day?", "Blue."},
    {"What color do you get by mixing blue and yellow?", "Green."},
    {"What color do you get by mixing red and white?", "Pink."},
    {"What is the boiling point of water at sea level?", "100 degrees Celsius (212 degrees Fahrenheit)."},
    {"What is the freezing point of water?", "0 degrees Celsius (32 degrees Fahrenheit)."},
    {"What is the chemical symbol for gold?", "Au."},
    {"What is the chemical symbol for water?", "H2O."},
    {"What gas do plants take in from the air?", "Carbon dioxide."},
    {"What gas do people need to breathe?", "Oxygen."},
    {"Who wrote Romeo and Juliet?", "William Shakespeare."},
    {"What is the tallest mountain in the world?", "Mount Everest."},
    {"What is the fastest land animal?", "The cheetah."},
    {"What is the largest mammal?", "The blue whale."},
    {"What do bees make?", "Honey."},
    {"Which is the longest river in Africa?", "The Nile."},
    {"What is the square root of 81?", "9."},
    {"What is the smallest prime number?", "2."},
    {"How many zeros are in one million?", "Six."},
};

struct Translation {
  const char* word;
  const char* fr;
  const char* es;
  const char* de;
};
const Translation kWords[] = {
    {"hello", "bonjour", "hola", "hallo"},          {"thank you", "merci", "gracias", "danke"},
    {"goodbye", "au revoir", "adiós", "auf Wiedersehen"}, {"yes", "oui", "sí", "ja"},
    {"no", "non", "no", "nein"},                     {"cat", "chat", "gato", "Katze"},
    {"dog", "chien", "perro", "Hund"},               {"water", "eau", "agua", "Wasser"},
    {"house", "maison", "casa", "Haus"},             {"book", "livre", "libro", "Buch"},
    {"friend", "ami", "amigo", "Freund"},            {"red", "rouge", "rojo", "rot"},
    {"green", "vert", "verde", "grün"},              {"one", "un", "uno", "eins"},
    {"two", "deux", "dos", "zwei"},                  {"three", "trois", "tres", "drei"},
    {"sun", "soleil", "sol", "Sonne"},               {"moon", "lune", "luna", "Mond"},
    {"bread", "pain", "pan", "Brot"},                {"apple", "pomme", "manzana", "Apfel"},
    {"please", "s'il vous plaît", "por favor", "bitte"}, {"school", "école", "escuela", "Schule"},
    {"good night", "bonne nuit", "buenas noches", "gute Nacht"}, {"milk", "lait", "leche", "Milch"},
};

const char* const kSpellWords[] = {"cat",    "dog",    "apple",  "house", "river",   "planet", "garden",
                                   "yellow", "banana", "orange", "window", "pencil", "summer", "winter",
                                   "rabbit", "guitar", "silver", "bottle", "castle", "forest", "market",
                                   "dragon", "rocket", "puzzle", "pepper"};

std::string quoted(const std::string& s) { return "\"" + s + "\""; }
std::string cap(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 'a' + 'A');
  return s;
}

std::vector<ChatPair> build_pool() {
  std::vector<ChatPair> p;
  auto add = [&](const char* cat, std::string u, std::string a) { p.push_back({cat, std::move(u), std::move(a)}); };
  for (const Two& t : kGreetings) add("greeting", t.a, t.b);
  for (const Two& t : kSmallTalk) add("small_talk", t.a, t.b);
  for (const Two& t : kSelf) add("self", t.a, t.b);
  for (const Two& t : kCapitals) {
    add("capital", std::string("What is the capital of ") + t.a + "?", std::string(t.b) + ".");
    add("capital", std::string("Which city is the capital of ") + t.a + "?",
        std::string("The capital of ") + t.a + " is " + t.b + ".");
  }
  for (const Two& t : kOpposites) {
    add("opposite", std::string("What is the opposite of ") + quoted(t.a) + "?", cap(t.b) + ".");
    add("opposite", std::string("Give me an antonym of ") + quoted(t.a) + ".",
        std::string("An antonym of ") + quoted(t.a) + " is " + quoted(t.b) + ".");
  }
  for (const Two& t : kPlurals)
    add("plural", std::string("What is the plural of ") + quoted(t.a) + "?", cap(t.b) + ".");
  for (const Two& t : kAnimalSounds)
    add("animal", std::string("What sound does a ") + t.a + " make?",
        std::string("A ") + t.a + " says " + quoted(t.b) + ".");
  for (const Two& t : kBabyAnimals)
    add("animal", std::string("What is a baby ") + t.a + " called?", std::string("A baby ") + t.a + " is called a " + t.b + ".");
  for (int i = 0; i < 7; ++i) {
    add("calendar", std::string("What day comes after ") + kDays[i] + "?", std::string(kDays[(i + 1) % 7]) + ".");
    add("calendar", std::string("What day comes before ") + kDays[i] + "?", std::string(kDays[(i + 6) % 7]) + ".");
  }
  for (int i = 0; i < 12; ++i) {
    add("calendar", std::string("How many days are in ") + kMonths[i] + "?", kMonthDays[i]);
    add("calendar", std::string("What month comes after ") + kMonths[i] + "?", std::string(kMonths[(i + 1) % 12]) + ".");
  }
  for (char c = 'A'; c < 'Z'; ++c) {
    add("alphabet", std::string("What letter comes after ") + c + "?", std::string(1, char(c + 1)) + ".");
    add("alphabet", std::string("What letter comes before ") + char(c + 1) + "?", std::string(1, c) + ".");
  }
  for (const Two& t : kFacts) add("fact", t.a, t.b);
  for (const Translation& w : kWords) {
    add("translation", std::string("How do you say ") + quoted(w.word) + " in French?", quoted(w.fr) + ".");
    add("translation", std::string("How do you say ") + quoted(w.word) + " in Spanish?", quoted(w.es) + ".");
    add("translation", std::string("How do you say ") + quoted(w.word) + " in German?", quoted(w.de) + ".");
  }
  for (const char* w : kSpellWords) {
    std::string r(w);
    std::reverse(r.begin(), r.end());
    add("spelling", std::string("How do you spell ") + quoted(w) + " backwards?", quoted(r) + ".");
    add("spelling", std::string("How many letters are in the word ") + quoted(w) + "?",
        std::to_string(std::strlen(w)) + ".");
  }
  for (int a = 2; a <= 9; ++a) {
    int b = (a * 4) % 9 + 1;
    add("number", "What is " + std::to_string(a) + " plus " + std::to_string(b) + "?", std::to_string(a + b) + ".");
    add("number", "What is " + std::to_string(a) + " times " + std::to_string(b) + "?", std::to_string(a * b) + ".");
  }
  for (int n = 1; n <= 30; ++n)
    add("number", "Is " + std::to_string(n) + " even or odd?",
        std::to_string(n) + (n % 2 ? " is odd." : " is even."));
  for (int i = 0; i < 20; ++i) {
    int a = 3 + i * 7 % 50, b = 5 + i * 13 % 47;
    if (a == b) continue;
    add("number", "Which is bigger, " + std::to_string(a) + " or " + std::to_string(b) + "?",
        std::to_string(std::max(a, b)) + " is bigger.");
  }
  return p;
}

}  // namespace

const std::vector<ChatPair>& chat_pool() {
  static const std::vector<ChatPair> pool = build_pool();
  return pool;
}

}  // namespace ds::tasks
