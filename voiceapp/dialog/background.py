"""What a site's knowledge base is not about: one line for each of many other kinds of business and topics.

e5 similarities are compressed (0.75-0.91 here), so how near a question is to the best passage says little by
itself. How much nearer it is to that passage than to the nearest of these lines does: "Do you deliver pizza?" is
nearer a restaurant's menu than a coffee shop's delivery terms. The lines are generic (a directory's categories,
not any site's questions); their vectors are computed once per process.
"""

from __future__ import annotations

import numpy as np

from voiceapp.config import Settings
from voiceapp.dialog import embed

TOPICS: tuple[str, ...] = (
    "Weather forecast for the week: temperature, rain, wind and sunshine.",
    "Sports news: match results, league tables, players and transfers.",
    "Politics and current affairs: the government, elections and new laws.",
    "Medical clinic: doctors, appointments, tests and vaccinations.",
    "Pharmacy: medicines, prescriptions and vitamins.",
    "Bank: accounts, loans, mortgages, exchange rates and money transfers.",
    "Air travel: flights, airlines, luggage and airport check-in.",
    "Hotel: rooms, reservations, breakfast and late check-out.",
    "Public transport: timetables, routes, tickets and travel passes.",
    "Taxi service: book a ride, fares and airport transfers.",
    "Car services: repairs, tyres, rental, insurance and car dealers.",
    "Electronics shop: phones, computers, televisions, household appliances and repairs.",
    "Telecom provider: mobile plans, internet contracts and bills.",
    "Home store: furniture, mattresses, lighting and home delivery.",
    "Florist: bouquets, plants and gardening supplies.",
    "Supermarket: groceries, fresh produce, household goods and drinks.",
    "Restaurant: pizza, burgers, sushi, pasta, starters and desserts.",
    "Bar and nightlife: beer, wine, spirits and live music.",
    "Entertainment: movies, theatre, television series and streaming.",
    "Books, literature, authors and reading recommendations.",
    "Music: songs, albums, concerts and playlists.",
    "Education: schools, homework, exams and language courses.",
    "Technology help: software, internet, passwords for online accounts and computer problems.",
    "Sports club: gym membership, fitness classes and swimming.",
    "Beauty and wellness: hairdresser, cosmetics, spa and body art.",
    "Cleaning services: laundry, dry cleaning and housekeeping.",
    "Postal and courier services: letters, packages and shipping rates.",
    "Culture: museums, galleries, exhibitions and monuments.",
    "Tourism: beaches, tours, excursions and sightseeing.",
    "Cooking at home: recipes, ingredients and kitchen tips.",
    "Pet supplies and veterinary care.",
    "Hardware and DIY: tools, building materials and spare parts.",
    "Fashion: clothing, shoes, accessories and sizes.",
    "Employment: job vacancies, salaries and applications.",
    "Housing: apartments for rent or sale, landlords and utilities.",
    "Public administration: identity documents, permits, fines and taxes.",
    "General knowledge: geography, history, science and famous people.",
    "Small talk, jokes, riddles and philosophy.",
    "Date and time around the world, calendars and time zones.",
    "Energy: electricity, fuel prices and charging.",
    "Прогноз погоды на неделю: температура, дождь, ветер.",
    "Спортивные новости: результаты матчей, турнирные таблицы.",
    "Политика и новости: правительство, выборы, законы.",
    "Поликлиника: врачи, запись на приём, анализы.",
    "Аптека: лекарства, рецепты, витамины.",
    "Банк: счета, кредиты, курсы валют, переводы.",
    "Авиаперелёты: рейсы, багаж, регистрация в аэропорту.",
    "Гостиница: номера, бронирование, завтрак.",
    "Общественный транспорт: расписание, маршруты, билеты.",
    "Такси: заказ поездки, тарифы, трансфер.",
    "Автосервис: ремонт, шины, аренда и продажа автомобилей.",
    "Магазин электроники: телефоны, компьютеры, бытовая техника, ремонт.",
    "Связь: мобильные тарифы, интернет, счета.",
    "Магазин для дома: мебель, матрасы, освещение.",
    "Цветы и растения: букеты, садоводство.",
    "Супермаркет: продукты, бытовая химия, напитки.",
    "Ресторан: пицца, бургеры, суши, паста, десерты.",
    "Бар: пиво, вино, крепкие напитки, живая музыка.",
    "Развлечения: кино, театр, сериалы.",
    "Книги, литература, писатели и что почитать.",
    "Музыка: песни, альбомы, концерты.",
    "Образование: школа, домашние задания, экзамены, языковые курсы.",
    "Компьютерная помощь: программы, интернет, учётные записи.",
    "Фитнес: абонемент в спортзал, тренировки, бассейн.",
    "Красота и здоровье: парикмахерская, косметика, спа.",
    "Бытовые услуги: прачечная, химчистка, уборка.",
    "Почта и курьеры: письма, отправления, тарифы.",
    "Культура: музеи, выставки, памятники.",
    "Туризм: пляжи, экскурсии, достопримечательности.",
    "Домашняя кухня: рецепты, продукты, советы.",
    "Товары для животных и ветеринария.",
    "Стройматериалы и инструменты, запчасти.",
    "Одежда и обувь, размеры.",
    "Работа: вакансии, зарплаты, резюме.",
    "Жильё: аренда и продажа квартир, коммунальные услуги.",
    "Госуслуги: документы, разрешения, штрафы, налоги.",
    "Общие знания: география, история, наука, известные люди.",
    "Болтовня, шутки, загадки, философия.",
    "Время и дата в разных городах, часовые пояса.",
    "Энергетика: электричество, топливо, зарядка.",
)


def vectors(settings: Settings) -> np.ndarray:
    """Unit vectors (len(TOPICS), 384) of the lines, embedded as passages (remembered by embed.passages)."""
    return embed.passages(settings, list(TOPICS))


def margin(raw: np.ndarray, qvec: np.ndarray, topics: np.ndarray | None) -> np.ndarray:
    """Per passage, its cosine with the question less the question's best cosine with a background line."""
    if topics is None or not len(topics):
        return np.zeros_like(raw)
    return raw - float((topics @ qvec).max())
